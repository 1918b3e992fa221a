"""The MongoDB store, on PyMongo's async API or a motor database handle.

One document per user (emails and per-service data embedded; the service data is projected out
of every user read), one per session and one per credential. Every critical transition is a
single-document conditional update, so no multi-document transaction is needed and a
standalone mongod, a replica set and a sharded cluster all work. Every value that reaches a
filter is checked to be a string (a version: an integer) first: a JSON object such as
`{"$ne": null}` can never become a query operator.

Uniqueness (a canonical username, a canonical email, a (provider, subject) identity) is kept
by `claims`: one document per unique value, whose `_id` is the value. A unique index on `_id`
is the one unique index every collection has, on every shard and even in a database dropped
under a running server, so every collection can be sharded on a hashed `_id` (three unique
indexes on different fields of `users` could never all be prefixed by one shard key). A claim
is written before the user document holds its value and released after it no longer does;
a write cut short between the two leaves a claim its user does not hold, which the next
claimant takes over once it is older than `_ORPHAN_AGE` (longer than any write may take).

Reads of security state go to the primary and writes wait for a majority (configurable), so a
revocation once acknowledged survives a failover and is never read back as valid.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

try:
    from pymongo import (
        ASCENDING,
        DESCENDING,
        AsyncMongoClient,
        IndexModel,
        ReadPreference,
        ReturnDocument,
        WriteConcern,
    )
    from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "MongoStore needs the [mongo] extra: pip install 'accounts-server[mongo]'"
    ) from exc

from ..deadline import store_deadline_at
from ..errors import (
    ConfigurationError,
    CredentialAlreadyExists,
    EmailAlreadyExists,
    IdentityAlreadyLinked,
    InvalidRequest,
    StoreUnavailable,
    UserAlreadyExists,
    UsernameAlreadyExists,
)
from ..types import Email, User
from ..validation import check_service_name
from ._common import claim, demoted, holds, report_demoted, search_ranges
from .base import (
    CANONICAL_EMAIL_VERSION,
    AuditQuery,
    AuditRecord,
    Credential,
    OneTimeToken,
    StoredSession,
    canonical_email,
    canonical_username,
    new_user_id,
)

__all__ = ["MongoStore"]

logger = logging.getLogger("accounts_server.stores.mongo")
_T = TypeVar("_T")

#: The `CANONICAL_EMAIL_VERSION` a user document's canonical forms follow (absent: version 1).
_CANONICAL_VERSION = "email_canonical_version"
#: True on a user document whose unique values all have their claims (absent: written by a
#: version of this store that kept uniqueness by unique indexes on `users`).
_CLAIMED = "claimed"
#: The unique indexes that version created, dropped by `setup` once claims replace them.
_OLD_UNIQUE_INDEXES = ("username_unique", "email_unique", "identity_unique")
#: Identities are stored as one string per (provider, subject).
_SEP = "\x1f"
#: How long a claim its user does not hold stays its user's: a write between claim and user
#: document takes at most the operation timeout (5 s), so an older one was cut short.
_ORPHAN_AGE = timedelta(minutes=1)
#: What each kind of claim is: the field of the user document that holds the value, and the
#: error a taken value raises.
_HELD_IN = {
    "username": "username_canonical",
    "email": "emails.address_canonical",
    "identity": "identities",
}
_TAKEN: dict[str, type[UsernameAlreadyExists | EmailAlreadyExists | IdentityAlreadyLinked]] = {
    "username": UsernameAlreadyExists,
    "email": EmailAlreadyExists,
    "identity": IdentityAlreadyLinked,
}
#: MongoDB's codes for an index it cannot create: options or key specs conflicting with an
#: existing index (85, 86), an existing name with another key (68 with 85 on older servers).
_INDEX_CONFLICTS = frozenset({68, 85, 86, 11000})


def _identity(provider: str, subject: str) -> str:
    return f"{_key(provider)}{_SEP}{_key(subject)}"


def _claim_id(kind: str, value: str) -> str:
    return f"{kind}:{value}"


def _ms(moment: datetime) -> datetime:
    """A time as BSON keeps it (milliseconds), so what a call returns is what a read returns."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _created(doc: Mapping[str, Any]) -> datetime:
    """A user document's creation, for `claim` (the earliest there is, if it has none)."""
    created = doc.get("created_at")
    return created if isinstance(created, datetime) else datetime.min.replace(tzinfo=UTC)


#: Never leaves the store through a user read.
_USER_PROJECTION = {"services": 0, "identities": 0}


def _key(value: object) -> str:
    """A filter value: a string, never an object or list that could act as an operator."""
    if not isinstance(value, str):
        raise InvalidRequest("identifiers must be strings")
    return value


def _version(value: object) -> int:
    """A version in a filter: an integer (not a bool, which MongoDB does not match to 1)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest("versions must be integers")
    return value


def _session(doc: Mapping[str, Any]) -> StoredSession:
    return StoredSession(
        id=doc["_id"],
        user_id=doc["user_id"],
        valid=bool(doc["valid"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        last_used_at=doc["last_used_at"],
        expires_at=doc["expires_at"],
        refresh_hash=bytes(doc["refresh_hash"]),
        previous_hash=None if doc.get("previous_hash") is None else bytes(doc["previous_hash"]),
        rotated_at=doc.get("rotated_at"),
        ip=doc.get("ip"),
        user_agent=doc.get("user_agent"),
        impersonator_id=doc.get("impersonator_id"),
        amr=tuple(doc.get("amr", ())),
    )


def _credential(doc: Mapping[str, Any]) -> Credential:
    return Credential(
        id=doc["_id"],
        user_id=doc["user_id"],
        kind=doc["kind"],
        data=doc["data"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        version=int(doc["version"]),
    )


_AUDIT_FIELDS = tuple(field.name for field in fields(AuditRecord))


def _audit(doc: Mapping[str, Any]) -> AuditRecord:
    values: dict[str, Any] = {name: doc.get(name) for name in _AUDIT_FIELDS if name != "id"}
    return AuditRecord(id=doc["_id"], **values)


#: (collection, index): what `setup_indexes` creates, in order. `users` has no unique index
#: but `_id`: `claims` keeps uniqueness. Lookups by username, email and identity use these.
_INDEXES: tuple[tuple[str, IndexModel], ...] = (
    ("users", IndexModel([("username_canonical", ASCENDING)], name="username")),
    ("users", IndexModel([("emails.address_canonical", ASCENDING)], name="email")),
    ("users", IndexModel([("identities", ASCENDING)], name="identity")),
    # `list_users` pages in creation order.
    ("users", IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)], name="created")),
    # So that setup finds the documents to bring up to date without a scan.
    ("users", IndexModel([(_CANONICAL_VERSION, ASCENDING)], name=_CANONICAL_VERSION)),
    ("users", IndexModel([(_CLAIMED, ASCENDING)], name=_CLAIMED)),
    ("claims", IndexModel([("user_id", ASCENDING)], name="user")),
    ("sessions", IndexModel([("user_id", ASCENDING)], name="user")),
    # Housekeeping only: expiry is always checked in code too.
    ("sessions", IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0)),
    # Token documents are keyed by their hash. An expired one stays a day, so that following
    # a link late says "expired", not "unknown".
    ("tokens", IndexModel([("user_id", ASCENDING), ("kind", ASCENDING)], name="user")),
    ("tokens", IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=86400)),
    ("counters", IndexModel([("key", ASCENDING)], name="key")),
    ("counters", IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0)),
    # Credential documents are keyed by their id; no expiry.
    ("credentials", IndexModel([("user_id", ASCENDING), ("kind", ASCENDING)], name="user")),
    # Audit records: by user or event, newest first; gone when they expire.
    ("audit", IndexModel([("user_id", ASCENDING), ("_id", DESCENDING)], name="user")),
    ("audit", IndexModel([("event", ASCENDING), ("_id", DESCENDING)], name="event")),
    ("audit", IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0)),
    ("audit", IndexModel([("event", ASCENDING), ("at", ASCENDING)], name="event_at")),
)


class MongoStore:
    """Store on a MongoDB database: a PyMongo `AsyncDatabase` or a motor
    `AsyncIOMotorDatabase`. With a handle you pass in, your client's timeouts and codec
    options apply; `from_url` sets DESIGN's (server selection 3 s, connect 2 s, operation
    5 s). Whatever the handle's read preference and write concern, the store reads from the
    primary and writes with `write_concern` (majority by default: w:1 lets a failover roll
    back an acknowledged logout).

    Indexes are created by `setup()` (idempotent), and before the first write if nobody
    called it; `prune_expired` creates them again if they went missing (a database dropped
    under a running server). `prune_batch_size` bounds the documents one step of
    `prune_expired` deletes.

    Raises:
        ConfigurationError: a `prune_batch_size` below 1.
    """

    def __init__(
        self,
        database: Any,
        *,
        owns_client: bool = False,
        prune_batch_size: int = 1000,
        write_concern: WriteConcern | None = None,
    ) -> None:
        if prune_batch_size < 1:
            raise ConfigurationError("prune_batch_size must be at least 1")
        self._prune_batch = prune_batch_size
        self._db = database.with_options(
            codec_options=database.codec_options.with_options(tz_aware=True, tzinfo=UTC),
            read_preference=ReadPreference.PRIMARY,
            write_concern=WriteConcern(w="majority") if write_concern is None else write_concern,
        )
        self._users = self._db["users"]
        self._claims = self._db["claims"]
        self._sessions = self._db["sessions"]
        self._tokens = self._db["tokens"]
        self._counters = self._db["counters"]
        self._credentials = self._db["credentials"]
        self._audit = self._db["audit"]
        self._owns_client = owns_client
        self._indexed = False
        self._setup_lock = asyncio.Lock()

    @classmethod
    def from_url(
        cls,
        url: str,
        db_name: str = "accounts",
        *,
        server_selection_timeout: float = 3.0,
        connect_timeout: float = 2.0,
        operation_timeout: float = 5.0,
        prune_batch_size: int = 1000,
        write_concern: WriteConcern | None = None,
    ) -> MongoStore:
        """A store with its own client. The operation bound is the socket timeout: PyMongo's
        `timeoutMS` would also replace the server-selection bound, so a database that is down
        would take the operation timeout, not the selection timeout, to report. Waiting for a
        pooled connection is bounded by the selection timeout, so a pool exhausted under load
        answers 503 in bounded time too. Options in `url` (`replicaSet=`, `retryWrites=`,
        `maxPoolSize=`) apply as given, but the read preference and write concern are the
        store's."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=int(server_selection_timeout * 1000),
            connectTimeoutMS=int(connect_timeout * 1000),
            socketTimeoutMS=int(operation_timeout * 1000),
            waitQueueTimeoutMS=int(server_selection_timeout * 1000),
            tz_aware=True,
        )
        return cls(
            client[db_name],
            owns_client=True,
            prune_batch_size=prune_batch_size,
            write_concern=write_concern,
        )

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """One call, within the request's `store_deadline` if there is one."""
        try:
            at = store_deadline_at()
            if at is None:
                return await operation()
            async with asyncio.timeout_at(at):
                return await operation()
        except DuplicateKeyError:
            raise
        except (PyMongoError, TimeoutError) as exc:
            # One line per failure; PyMongo's message carries a topology description of
            # hundreds of characters, which goes to debug.
            summary = str(exc).split(", Timeout:", 1)[0].split("\n", 1)[0][:160]
            if isinstance(exc, TimeoutError):
                summary = "the request's store deadline ran out"
            logger.warning("MongoDB unavailable: %s: %s", type(exc).__name__, summary)
            logger.debug("MongoDB error in full: %s", exc)
            raise StoreUnavailable() from exc

    async def _retried(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """`_run` for an idempotent write PyMongo does not retry itself (`update_many`,
        `delete_many`), tried once more after a failover: a revocation the user cannot
        repeat (a password reset's "sign out everywhere else") must not be lost to one."""
        try:
            return await self._run(operation)
        except StoreUnavailable:
            return await self._run(operation)

    async def setup(self) -> None:
        """The store contract's preparation step: `setup_indexes()`."""
        await self.setup_indexes()

    async def setup_indexes(self) -> None:
        """Create the indexes, write the claims of user documents that have none and bring
        canonical email forms up to date (`_recanonicalise_emails`); safe to call any number
        of times, and run by one coroutine at a time.

        Raises:
            ConfigurationError: MongoDB refused an index (an operator's index with another
                name or options on the same key), naming it and the fix.
        """
        async with self._setup_lock:
            await self._set_up()

    async def _set_up(self) -> None:
        await self._drop_old_unique_indexes()
        for collection, index in _INDEXES:
            await self._create_index(collection, index)
        await self._recanonicalise_emails()
        self._indexed = True

    async def _create_index(self, collection: str, index: IndexModel) -> None:
        try:
            await self._run(partial(self._db[collection].create_indexes, [index]))
        except StoreUnavailable as exc:
            cause = exc.__cause__
            if not isinstance(cause, OperationFailure) or cause.code not in _INDEX_CONFLICTS:
                raise
            document = index.document
            raise ConfigurationError(
                f"MongoDB refused the index {document['name']!r} on {collection} "
                f"{dict(document['key'])} (code {cause.code}): "
                f"{str((cause.details and cause.details.get('errmsg')) or cause)[:200]}. "
                f"An index on the same key with another name or options is in the way: drop "
                f"it (db.{collection}.dropIndex(NAME)) and start again; this store needs its "
                "own."
            ) from None
        except DuplicateKeyError as exc:  # a unique index's build: none of ours is, but say so
            raise ConfigurationError(
                f"MongoDB could not build the index {index.document['name']!r} on "
                f"{collection}: duplicate values ({str(exc)[:200]})"
            ) from None

    async def _drop_old_unique_indexes(self) -> None:
        """The unique indexes an earlier version put on `users` would refuse the claims'
        lookups indexes on the same keys and keep `users` unshardable. Dropped before the
        claims are written: finish an upgrade (no earlier version writing) first."""

        existing = await self._run(self._users.index_information)
        for name in set(_OLD_UNIQUE_INDEXES) & set(existing):
            await self._run(partial(self._users.drop_index, name))

    async def _ensure_indexes(self) -> None:
        """Setup before the first write, once however many writes wait for it."""
        if not self._indexed:
            async with self._setup_lock:
                if not self._indexed:
                    await self._set_up()

    # -- claims -----------------------------------------------------------------------------

    async def _claim(
        self, kind: str, value: str, user_id: str, *, now: datetime, any_age: bool = False
    ) -> bool:
        """Make `value` (of `kind`) the user's alone. Returns True when this call claimed it,
        False when the user had its claim already. A claim of another user is taken over only
        if that user does not hold the value and the claim is older than `_ORPHAN_AGE` (with
        `any_age`, whatever its age: setup's, which runs before this store writes anything
        else); the takeover is a compare-and-set, so of two claimants one wins.

        Raises:
            UsernameAlreadyExists, EmailAlreadyExists, IdentityAlreadyLinked: another user
                has it.
        """
        claim_id = _claim_id(kind, value)
        mine = {"_id": claim_id, "user_id": user_id, "at": now}
        for _ in range(5):
            try:
                await self._run(partial(self._claims.insert_one, mine))
                return True
            except DuplicateKeyError:
                pass
            held = await self._run(partial(self._claims.find_one, {"_id": claim_id}))
            if held is None:
                continue  # released meanwhile
            if held["user_id"] == user_id:
                return False
            young = not any_age and held["at"] > now - _ORPHAN_AGE
            if young or await self._holds(held["user_id"], kind, value):
                raise _TAKEN[kind]()
            before = {"_id": claim_id, "user_id": held["user_id"], "at": held["at"]}
            taken = await self._run(partial(self._claims.replace_one, before, mine))
            if taken.modified_count == 1:
                logger.info("took over an orphaned %s claim of user %s", kind, held["user_id"])
                return True
        raise StoreUnavailable("too much contention on a unique value")

    async def _holds(self, user_id: str, kind: str, value: str) -> bool:
        query = {"_id": user_id, _HELD_IN[kind]: value}
        return await self._run(partial(self._users.find_one, query, {"_id": 1})) is not None

    async def _release(self, user_id: str, claims: Sequence[tuple[str, str]]) -> None:
        """Give up claims the user does not hold (never another user's)."""
        if claims:
            ids = [_claim_id(kind, value) for kind, value in claims]
            query = {"_id": {"$in": ids}, "user_id": user_id}
            await self._retried(partial(self._claims.delete_many, query))

    async def _recanonicalise_emails(self) -> None:
        """Bring every user document up to date: written without claims (by a version that
        kept uniqueness in unique indexes) or under an older `canonical_email` (found by its
        `email_canonical_version`). Per document, so a run cut short is taken up by the next
        setup, and workers doing it at once agree: every change is a compare-and-set.
        Addresses that are now one all stay; the best claim keeps the canonical form, the
        others are demoted and reported, as `_common` describes and justifies. Documents may
        come in any order: each step keeps the better of two claims.
        """
        outdated = {
            "$or": [
                {_CANONICAL_VERSION: {"$ne": CANONICAL_EMAIL_VERSION}},
                {_CLAIMED: {"$ne": True}},
            ]
        }

        async def batch() -> list[str]:
            cursor = self._users.find(outdated, {"_id": 1}).limit(500)
            return [doc["_id"] async for doc in cursor]

        while user_ids := await self._run(batch):
            for user_id in user_ids:
                await self._recanonicalise(user_id)

    async def _recanonicalise(self, user_id: str) -> None:
        """Bring one user document to the current version, retried when another writer got
        in between. Its username and identities were unique already; its emails are settled
        against every other claim to their new forms.

        Raises:
            StoreUnavailable: it kept changing under us.
        """
        projection = {
            "emails": 1,
            "created_at": 1,
            "username_canonical": 1,
            "identities": 1,
            _CANONICAL_VERSION: 1,
            _CLAIMED: 1,
        }
        for _ in range(5):
            doc = await self._run(partial(self._users.find_one, {"_id": user_id}, projection))
            if doc is None or (
                doc.get(_CANONICAL_VERSION) == CANONICAL_EMAIL_VERSION and doc.get(_CLAIMED)
            ):
                return
            at = _created(doc)
            kept: list[tuple[str, str]] = [("identity", i) for i in doc.get("identities", ())]
            if doc.get("username_canonical") is not None:
                kept.append(("username", doc["username_canonical"]))
            for kind, value in kept:
                try:
                    await self._claim(kind, value, user_id, now=at, any_age=True)
                except (UsernameAlreadyExists, IdentityAlreadyLinked):
                    logger.warning(
                        "MongoDB: user %s shares its %s with another user", user_id, kind
                    )
            settled = await self._settle_claims(doc)
            if settled is None:
                continue
            after, lost_to = settled
            query: dict[str, Any] = {"_id": user_id, "emails": {"$exists": False}}
            change: dict[str, Any] = {
                _CANONICAL_VERSION: CANONICAL_EMAIL_VERSION,
                _CLAIMED: True,
            }
            if "emails" in doc:
                query["emails"] = doc["emails"]
                change["emails"] = after
            result = await self._run(partial(self._users.update_one, query, {"$set": change}))
            if result.matched_count == 1:
                for holder_id in lost_to:
                    report_demoted("MongoDB", user_id, holder_id)
                now_held = {e["address_canonical"] for e in after}
                gone = {e["address_canonical"] for e in doc.get("emails", ())} - now_held
                await self._release(user_id, [("email", form) for form in gone])
                return
        raise StoreUnavailable("too much contention while recanonicalising a user's emails")

    async def _settle_claims(
        self, doc: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[str]] | None:
        """The document's emails with recomputed canonical forms: the form itself for the best
        claim to it, which now has the form's claim document, a demoted form for every other.
        With the user ids holding the forms this document's addresses newly lost. None when
        another document changed under us.
        """
        user_id = doc["_id"]
        entries: list[dict[str, Any]] = doc.get("emails", [])
        forms = [canonical_email(e["address"]) for e in entries]
        best: dict[str, tuple[tuple[bool, datetime, str, int], int]] = {}
        for position, (entry, form) in enumerate(zip(entries, forms, strict=True)):
            mine = claim(bool(entry["verified"]), _created(doc), user_id, position)
            if form not in best or mine < best[form][0]:
                best[form] = (mine, position)
        holders: dict[str, tuple[str, int | None]] = {}  # form -> (user id, own position)
        for form, (mine, position) in best.items():
            holder = await self._settle_form(user_id, form, mine, _created(doc))
            if holder is None:
                return None
            holders[form] = (user_id, position) if holder == user_id else (holder, None)
        after: list[dict[str, Any]] = []
        lost_to: list[str] = []
        for position, (entry, form) in enumerate(zip(entries, forms, strict=True)):
            holder_id, holder_at = holders[form]
            stored = form
            if (holder_id, holder_at) != (user_id, position):
                stored = demoted(form, user_id, position)
                if entry["address_canonical"] != stored:
                    lost_to.append(holder_id)
            after.append({**entry, "address_canonical": stored})
        return after, lost_to

    async def _settle_form(
        self, user_id: str, form: str, mine: tuple[bool, datetime, str, int], at: datetime
    ) -> str | None:
        """Decide who keeps `form`: the user whose document holds it (by claim or, not yet
        brought up to date, as its stored form) with the better claim: that user's id (this
        user's: it now has the form's claim, a worse holder's entry demoted first), or None
        when another document changed under us."""
        claim_id = _claim_id("email", form)
        held = await self._run(partial(self._claims.find_one, {"_id": claim_id}))
        if held is not None and held["user_id"] == user_id:
            return user_id
        query: dict[str, Any] = {"emails.address_canonical": form, "_id": {"$ne": user_id}}
        if held is not None:
            query["_id"] = held["user_id"]
        other = await self._run(
            partial(self._users.find_one, query, {"emails": 1, "created_at": 1})
        )
        if other is not None:
            at_, entry = next(
                (i, e) for i, e in enumerate(other["emails"]) if e["address_canonical"] == form
            )
            # An outdated document may hold as its old form what is not its address's new one:
            # no claim then, and its own recanonicalisation finds its form.
            rival = canonical_email(entry["address"]) == form
            theirs = claim(bool(entry["verified"]), _created(other), other["_id"], at_)
            if rival and theirs < mine:
                return str(other["_id"])
            if not await self._demote(other, at_, form, holder_id=user_id if rival else None):
                return None
        if held is None:
            try:
                await self._run(
                    partial(
                        self._claims.insert_one, {"_id": claim_id, "user_id": user_id, "at": at}
                    )
                )
            except DuplicateKeyError:
                return None
            return user_id
        taken = await self._run(
            partial(
                self._claims.replace_one,
                {"_id": claim_id, "user_id": held["user_id"], "at": held["at"]},
                {"_id": claim_id, "user_id": user_id, "at": at},
            )
        )
        return user_id if taken.modified_count == 1 else None

    async def _demote(
        self, doc: Mapping[str, Any], position: int, form: str, *, holder_id: str | None
    ) -> bool:
        """Demote one entry of another document, which lost `form` to a better claim of
        `holder_id` (reported; None: to no claim, not reported); compare-and-set on its emails.
        Returns whether it was still as read."""
        before = doc["emails"]
        after = list(before)
        after[position] = {
            **before[position],
            "address_canonical": demoted(form, doc["_id"], position),
        }
        query = {"_id": doc["_id"], "emails": before}
        result = await self._run(
            partial(self._users.update_one, query, {"$set": {"emails": after}})
        )
        if result.matched_count != 1:
            return False
        if holder_id is not None:
            report_demoted("MongoDB", doc["_id"], holder_id)
        return True

    @staticmethod
    def _user(doc: Mapping[str, Any] | None) -> User | None:
        if doc is None:
            return None
        return User(
            id=doc["_id"],
            username=doc.get("username"),
            emails=tuple(Email(e["address"], bool(e["verified"])) for e in doc.get("emails", ())),
            deactivated=bool(doc.get("deactivated", False)),
            created_at=doc.get("created_at"),
            updated_at=doc.get("updated_at"),
            extra=doc.get("extra", {}),
        )

    async def _find_user(self, query: dict[str, str]) -> User | None:
        return self._user(await self._run(lambda: self._users.find_one(query, _USER_PROJECTION)))

    # -- users ------------------------------------------------------------------------------

    async def create_user(
        self,
        *,
        username: str | None,
        emails: Sequence[Email],
        extra: Mapping[str, Any],
        services: Mapping[str, Mapping[str, Any]],
        now: datetime,
        identities: Sequence[tuple[str, str]] = (),
        user_id: str | None = None,
        created_at: datetime | None = None,
    ) -> User:
        """The claims first, then the user document. A claim refused releases those taken
        before it; a failure after them leaves them, unheld (released by the next claimant):
        the insert may have happened after all, and a user without its claims is not unique.
        Only claims this call took are ever released: with an existing `user_id`, the claims
        it finds its own are that user's."""
        await self._ensure_indexes()
        now = _ms(now)
        canonical = [canonical_email(e.address) for e in emails]
        linked = [_identity(provider, subject) for provider, subject in identities]
        # Unique values that repeat within one user: their claims are this user's already.
        if len(set(canonical)) != len(canonical):
            raise EmailAlreadyExists()
        if len(set(linked)) != len(linked):
            raise IdentityAlreadyLinked()
        kept_id, user_id = user_id, new_user_id() if user_id is None else _key(user_id)
        doc: dict[str, Any] = {
            "_id": user_id,
            "username": username,
            "deactivated": False,
            "extra": dict(extra),
            "services": {check_service_name(k): dict(v) for k, v in services.items()},
            "created_at": now if created_at is None else _ms(created_at),
            "updated_at": now,
            _CANONICAL_VERSION: CANONICAL_EMAIL_VERSION,
            _CLAIMED: True,
        }
        claims: list[tuple[str, str]] = [("identity", i) for i in linked]
        if username is not None:
            doc["username_canonical"] = canonical_username(username)
            claims.insert(0, ("username", doc["username_canonical"]))
        if linked:
            doc["identities"] = linked
        if emails:
            doc["emails"] = [
                {"address": e.address, "address_canonical": c, "verified": e.verified}
                for e, c in zip(emails, canonical, strict=True)
            ]
            claims += [("email", c) for c in canonical]
        taken: list[tuple[str, str]] = []
        try:
            for kind, value in claims:
                if await self._claim(kind, value, user_id, now=now):
                    taken.append((kind, value))
            await self._run(lambda: self._users.insert_one(doc))
        except (UsernameAlreadyExists, EmailAlreadyExists, IdentityAlreadyLinked) as exc:
            await self._release(user_id, taken)
            if kept_id is not None and await self.find_user_by_id(kept_id) is not None:
                raise UserAlreadyExists() from exc
            raise
        except DuplicateKeyError as exc:  # the only unique index on users is `_id`
            await self._release(user_id, taken)
            raise UserAlreadyExists() from exc
        user = self._user(doc)
        assert user is not None
        return user

    async def find_user_by_id(self, user_id: str) -> User | None:
        return await self._find_user({"_id": _key(user_id)})

    async def find_user_by_username(self, username: str) -> User | None:
        return await self._find_user({"username_canonical": canonical_username(_key(username))})

    async def find_user_by_email(self, address: str) -> User | None:
        return await self._find_user({"emails.address_canonical": canonical_email(_key(address))})

    async def find_user_by_identity(self, provider: str, subject: str) -> User | None:
        return await self._find_user({"identities": _identity(provider, subject)})

    async def add_identity(
        self, user_id: str, provider: str, subject: str, *, now: datetime
    ) -> bool:
        key = _identity(provider, subject)
        query = {"_id": _key(user_id), "identities": {"$ne": key}}
        update = {"$push": {"identities": key}}
        return await self._push_unique(user_id, ("identity", key), query, update, now)

    async def _push_unique(
        self,
        user_id: str,
        value: tuple[str, str],
        query: Mapping[str, Any],
        update: Mapping[str, Any],
        now: datetime,
    ) -> bool:
        """Append to one of the user's arrays a value no user may share: its claim first,
        then the append, which `query` (`{"$ne": value}`) makes a no-op when this user has it
        already. Returns False when no such user exists.

        Raises:
            UsernameAlreadyExists, EmailAlreadyExists, IdentityAlreadyLinked: some user, this
                one included, has the value already.
        """
        await self._ensure_indexes()
        kind, unique = value
        try:
            claimed = await self._claim(kind, unique, _key(user_id), now=_ms(now))
        except (EmailAlreadyExists, IdentityAlreadyLinked):
            if await self.find_user_by_id(user_id) is None:
                return False  # as SQLite answers: no user comes before a taken value
            raise
        result = await self._run(partial(self._users.update_one, query, update))
        if result.matched_count == 1:
            return True
        if claimed:  # nobody holds it: the user is gone
            await self._release(user_id, [value])
        if await self.find_user_by_id(user_id) is None:
            return False
        raise _TAKEN[kind]()  # this user has it already

    async def set_user_deactivated(self, user_id: str, deactivated: bool, *, now: datetime) -> bool:
        update = {"$set": {"deactivated": bool(deactivated), "updated_at": now}}
        result = await self._run(lambda: self._users.update_one({"_id": _key(user_id)}, update))
        return bool(result.matched_count == 1)

    async def update_user(
        self,
        user_id: str,
        *,
        now: datetime,
        username: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> User | None:
        """A new username is claimed before the user document takes it and the old one
        released after."""
        await self._ensure_indexes()
        key, now = _key(user_id), _ms(now)
        changes: dict[str, Any] = {"updated_at": now}
        claimed = False
        if username is not None:
            changes.update(username=username, username_canonical=canonical_username(username))
            try:
                claimed = await self._claim("username", changes["username_canonical"], key, now=now)
            except UsernameAlreadyExists:
                if await self.find_user_by_id(key) is None:
                    return None
                raise
        if extra is not None:
            changes["extra"] = dict(extra)
        before = await self._run(
            lambda: self._users.find_one_and_update(
                {"_id": key},
                {"$set": changes},
                projection=_USER_PROJECTION,
                return_document=ReturnDocument.BEFORE,
            )
        )
        old_name = None if before is None else before.get("username_canonical")
        if before is None and claimed:
            await self._release(key, [("username", changes["username_canonical"])])
        elif username is not None and old_name not in (None, changes["username_canonical"]):
            await self._release(key, [("username", old_name)])
        return None if before is None else self._user({**before, **changes})

    async def list_users(
        self, *, search: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[User]:
        if limit <= 0:  # MongoDB reads a limit of 0 as none at all
            return []
        query: dict[str, Any] = {}
        if search:
            (name_low, name_high), (mail_low, mail_high) = search_ranges(_key(search))
            query = {
                "$or": [
                    {"username_canonical": {"$gte": name_low, "$lt": name_high}},
                    {"emails.address_canonical": {"$gte": mail_low, "$lt": mail_high}},
                ]
            }

        async def fetch() -> list[dict[str, Any]]:
            cursor = (
                self._users.find(query, _USER_PROJECTION)
                .sort([("created_at", 1), ("_id", 1)])
                .skip(max(0, offset))
                .limit(limit)
            )
            return [doc async for doc in cursor]

        return [user for doc in await self._run(fetch) if (user := self._user(doc))]

    async def delete_user(self, user_id: str) -> bool:
        key = _key(user_id)
        # The user first: a claim, session, token or credential left by a crash here resolves
        # to no user, so it is dead (a claim is taken over, the TTL index removes sessions and
        # tokens), and deleting the user again removes any of them (`create_credential`
        # relies on this order).
        result = await self._run(lambda: self._users.delete_one({"_id": key}))
        for collection in (self._claims, self._sessions, self._tokens, self._credentials):
            await self._retried(partial(collection.delete_many, {"user_id": key}))
        return bool(result.deleted_count == 1)

    async def list_user_identities(self, user_id: str) -> list[tuple[str, str]]:
        found = {"_id": _key(user_id)}
        doc = await self._run(lambda: self._users.find_one(found, {"identities": 1}))
        pairs = (key.split(_SEP, 1) for key in (doc or {}).get("identities", ()))
        return sorted((provider, subject) for provider, subject in pairs)

    async def get_service_data(self, user_id: str, service: str) -> Mapping[str, Any] | None:
        field = f"services.{check_service_name(service)}"
        doc = await self._run(lambda: self._users.find_one({"_id": _key(user_id)}, {field: 1}))
        if doc is None:
            return None
        data = doc.get("services", {}).get(service)
        return None if data is None else dict(data)

    async def set_service_data(
        self, user_id: str, service: str, data: Mapping[str, Any], *, now: datetime
    ) -> bool:
        field = f"services.{check_service_name(service)}"
        update = {"$set": {field: dict(data), "updated_at": now}}
        result = await self._run(lambda: self._users.update_one({"_id": _key(user_id)}, update))
        return bool(result.matched_count == 1)

    # -- emails -----------------------------------------------------------------------------

    async def add_email(self, user_id: str, email: Email, *, now: datetime) -> bool:
        canonical = canonical_email(email.address)
        entry = {
            "address": email.address,
            "address_canonical": canonical,
            "verified": email.verified,
        }
        query = {"_id": _key(user_id), "emails.address_canonical": {"$ne": canonical}}
        update = {"$push": {"emails": entry}, "$set": {"updated_at": now}}
        return await self._push_unique(user_id, ("email", canonical), query, update, now)

    async def remove_email(self, user_id: str, address: str, *, now: datetime) -> bool:
        canonical = canonical_email(_key(address))
        if not await self._edit_email(user_id, canonical, None, now):
            return False
        await self._release(user_id, [("email", canonical)])
        return True

    async def set_email_verified(self, user_id: str, address: str, *, now: datetime) -> bool:
        canonical = canonical_email(_key(address))
        return await self._edit_email(user_id, canonical, {"verified": True}, now)

    async def _edit_email(
        self, user_id: str, canonical: str, changes: Mapping[str, Any] | None, now: datetime
    ) -> bool:
        """Update (`changes`) or remove (None) one address by compare-and-set on the whole
        emails array: no positional operators, so any MongoDB-wire server behaves; retried when
        another writer got in between. An emptied list is removed, so the sparse unique index
        never sees `[]`. The address's entries are the one holding `canonical` and any that
        setup demoted (`_common`), so the user can still remove or verify those. Returns
        whether the user has the address."""
        key = _key(user_id)
        for _ in range(5):
            doc = await self._run(lambda: self._users.find_one({"_id": key}, {"emails": 1}))
            before: list[dict[str, Any]] = [] if doc is None else doc.get("emails", [])
            if not any(holds(e["address_canonical"], canonical) for e in before):
                return False
            if changes is None:
                after = [e for e in before if not holds(e["address_canonical"], canonical)]
            else:
                after = [
                    {**e, **changes} if holds(e["address_canonical"], canonical) else e
                    for e in before
                ]
            if after == before:
                return True
            change: dict[str, Any] = {"$set": {"updated_at": now}}
            if after:
                change["$set"]["emails"] = after
            else:
                change["$unset"] = {"emails": ""}
            query = {"_id": key, "emails": before}
            result = await self._run(partial(self._users.update_one, query, change))
            if result.matched_count == 1:
                return True
        raise StoreUnavailable("too much contention on one user's emails")

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: StoredSession) -> None:
        await self._ensure_indexes()
        s = session
        doc = {
            "_id": s.id,
            "user_id": s.user_id,
            "valid": s.valid,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "last_used_at": s.last_used_at,
            "expires_at": s.expires_at,
            "refresh_hash": s.refresh_hash,
            "previous_hash": s.previous_hash,
            "rotated_at": s.rotated_at,
            "ip": s.ip,
            "user_agent": s.user_agent,
            "impersonator_id": s.impersonator_id,
            "amr": list(s.amr),
        }
        await self._run(lambda: self._sessions.insert_one(doc))

    async def find_session(self, session_id: str) -> StoredSession | None:
        doc = await self._run(lambda: self._sessions.find_one({"_id": _key(session_id)}))
        return None if doc is None else _session(doc)

    async def find_session_user(self, session_id: str) -> tuple[StoredSession, User | None] | None:
        """Two reads by `_id`: a `$lookup` would not shard."""
        session = await self.find_session(session_id)
        if session is None:
            return None
        return session, await self.find_user_by_id(session.user_id)

    async def list_user_sessions(self, user_id: str) -> list[StoredSession]:
        query = {"user_id": _key(user_id), "valid": True}

        async def fetch() -> list[dict[str, Any]]:
            cursor = self._sessions.find(query).sort("created_at", -1)
            return [doc async for doc in cursor]

        return [_session(doc) for doc in await self._run(fetch)]

    async def rotate_refresh(
        self,
        session_id: str,
        *,
        expected_hash: bytes,
        new_hash: bytes,
        now: datetime,
        ip: str | None,
        user_agent: str | None,
    ) -> bool:
        query = {"_id": _key(session_id), "refresh_hash": bytes(expected_hash), "valid": True}
        update = {
            "$set": {
                "refresh_hash": bytes(new_hash),
                "previous_hash": bytes(expected_hash),
                "rotated_at": now,
                "last_used_at": now,
                "updated_at": now,
                "ip": ip,
                "user_agent": user_agent,
            }
        }
        result = await self._run(lambda: self._sessions.update_one(query, update))
        return bool(result.modified_count == 1)

    async def touch_session(self, session_id: str, *, now: datetime) -> bool:
        query = {"_id": _key(session_id), "valid": True}
        update = {"$set": {"last_used_at": now}}
        result = await self._run(lambda: self._sessions.update_one(query, update))
        return bool(result.matched_count == 1)

    async def invalidate_session(self, session_id: str, *, now: datetime) -> bool:
        query = {"_id": _key(session_id), "valid": True}
        update = {"$set": {"valid": False, "updated_at": now}}
        result = await self._run(lambda: self._sessions.update_one(query, update))
        return bool(result.modified_count == 1)

    async def invalidate_user_sessions(
        self, user_id: str, *, now: datetime, except_ids: Sequence[str] = ()
    ) -> int:
        query: dict[str, Any] = {"user_id": _key(user_id), "valid": True}
        if except_ids:
            query["_id"] = {"$nin": [_key(sid) for sid in except_ids]}
        update = {"$set": {"valid": False, "updated_at": now}}
        result = await self._retried(lambda: self._sessions.update_many(query, update))
        return int(result.modified_count)

    async def count_active_sessions(self, *, now: datetime) -> int:
        query = {"expires_at": {"$gt": now}, "valid": True}
        return int(await self._run(lambda: self._sessions.count_documents(query)))

    # -- credentials ------------------------------------------------------------------------

    async def create_credential(self, credential: Credential) -> bool:
        """Inserted first and its user looked up after, as `delete_user` removes the user
        before its credentials: a user deleted meanwhile is either seen missing here (and the
        credential taken back) or removes the credential itself. Looked up first, a deletion
        in between would leave a credential of nobody, holding its id for good."""
        await self._ensure_indexes()
        c = credential
        doc = {
            "_id": _key(c.id),
            "user_id": _key(c.user_id),
            "kind": _key(c.kind),
            "data": dict(c.data),
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "version": _version(c.version),
        }
        try:
            await self._run(lambda: self._credentials.insert_one(doc))
        except DuplicateKeyError as exc:
            if await self.find_user_by_id(c.user_id) is None:
                return False  # as SQLite answers: no user comes before a taken id
            raise CredentialAlreadyExists() from exc
        if await self.find_user_by_id(c.user_id) is not None:
            return True
        mine = {"_id": c.id, "user_id": c.user_id}
        await self._run(lambda: self._credentials.delete_one(mine))
        return False

    async def find_credential(self, credential_id: str) -> Credential | None:
        doc = await self._run(lambda: self._credentials.find_one({"_id": _key(credential_id)}))
        return None if doc is None else _credential(doc)

    async def list_user_credentials(
        self, user_id: str, kind: str | None = None
    ) -> list[Credential]:
        query = {"user_id": _key(user_id)}
        if kind is not None:
            query["kind"] = _key(kind)

        async def fetch() -> list[dict[str, Any]]:
            cursor = self._credentials.find(query).sort([("created_at", 1), ("_id", 1)])
            return [doc async for doc in cursor]

        return [_credential(doc) for doc in await self._run(fetch)]

    async def update_credential(
        self, credential_id: str, *, version: int, data: Mapping[str, Any], now: datetime
    ) -> bool:
        query = {"_id": _key(credential_id), "version": _version(version)}
        update = {"$set": {"data": dict(data), "updated_at": now}, "$inc": {"version": 1}}
        result = await self._run(lambda: self._credentials.update_one(query, update))
        return bool(result.modified_count == 1)

    async def delete_credential(self, credential_id: str) -> bool:
        query = {"_id": _key(credential_id)}
        result = await self._run(lambda: self._credentials.delete_one(query))
        return bool(result.deleted_count == 1)

    # -- the audit log ----------------------------------------------------------------------

    async def add_audit(self, record: AuditRecord) -> None:
        await self._ensure_indexes()
        doc = {field: getattr(record, field) for field in _AUDIT_FIELDS}
        doc["_id"] = doc.pop("id")
        await self._run(lambda: self._audit.insert_one(doc))

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        found: dict[str, Any] = {}
        if query.user_id is not None:
            found["user_id"] = _key(query.user_id)
        if query.events:
            found["event"] = {"$in": [_key(event) for event in query.events]}
        at: dict[str, datetime] = {}
        if query.since is not None:
            at["$gte"] = query.since
        if query.until is not None:
            at["$lt"] = query.until
        if at:
            found["at"] = at
        if query.before is not None:
            found["_id"] = {"$lt": _key(query.before)}

        async def fetch() -> list[dict[str, Any]]:
            cursor = self._audit.find(found).sort([("_id", DESCENDING)]).limit(query.limit)
            return [doc async for doc in cursor]

        return [_audit(doc) for doc in await self._run(fetch)]

    async def count_audit(
        self, events: Sequence[str], *, since: datetime, step: timedelta, steps: int
    ) -> dict[str, list[int]]:
        counts = {event: [0] * steps for event in events}
        if not events or steps <= 0:
            return counts
        width = int(step.total_seconds() * 1000)
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "event": {"$in": [_key(event) for event in events]},
                    "at": {"$gte": since, "$lt": since + step * steps},
                }
            },
            {
                "$group": {
                    "_id": {
                        "event": "$event",
                        "window": {"$floor": {"$divide": [{"$subtract": ["$at", since]}, width]}},
                    },
                    "count": {"$sum": 1},
                }
            },
        ]

        async def fetch() -> list[dict[str, Any]]:
            cursor = self._audit.aggregate(pipeline)
            if inspect.isawaitable(cursor):  # PyMongo's async API; motor's cursor is not
                cursor = await cursor
            return [doc async for doc in cursor]

        for doc in await self._run(fetch):
            window = min(int(doc["_id"]["window"]), steps - 1)
            counts[doc["_id"]["event"]][window] += int(doc["count"])
        return counts

    async def prune_expired(self, *, now: datetime) -> int:
        """The TTL indexes do this on their own; this is for an explicit prune. In batches of
        `prune_batch_size` documents, found through the expiry index and deleted by `_id`:
        one `delete_many` over millions would outlast the operation timeout. The indexes are
        created again first: the app prunes hourly, so indexes lost with a database dropped
        under a running server come back within the hour (uniqueness never depended on them:
        it is the claims' `_id`)."""
        self._indexed = False
        await self._ensure_indexes()
        query = {"expires_at": {"$lt": now}}
        total = 0
        for collection in (self._sessions, self._tokens, self._counters, self._audit):
            while True:
                ids = await self._run(partial(self._expired_ids, collection, query))
                if not ids:
                    break
                batch = {"_id": {"$in": ids}, **query}
                result = await self._run(partial(collection.delete_many, batch))
                total += int(result.deleted_count)
                # Fewer found than asked: that was the last batch. A full batch found and none
                # of it deleted (another pruner was faster): stop rather than loop on it.
                if len(ids) < self._prune_batch or result.deleted_count == 0:
                    break
        return total

    async def _expired_ids(self, collection: Any, query: Mapping[str, Any]) -> list[Any]:
        cursor = collection.find(query, {"_id": 1}).limit(self._prune_batch)
        return [doc["_id"] async for doc in cursor]

    # -- one-time tokens and counters -------------------------------------------------------

    async def create_token(self, token: OneTimeToken) -> None:
        await self._ensure_indexes()
        doc = {
            "_id": bytes(token.token_hash),
            "kind": token.kind,
            "user_id": token.user_id,
            "email": token.email,
            "data": dict(token.data),
            "created_at": token.created_at,
            "expires_at": token.expires_at,
        }
        await self._run(lambda: self._tokens.insert_one(doc))

    async def consume_token(self, token_hash: bytes, kind: str) -> OneTimeToken | None:
        query = {"_id": bytes(token_hash), "kind": _key(kind)}
        doc = await self._run(lambda: self._tokens.find_one_and_delete(query))
        if doc is None:
            return None
        return OneTimeToken(
            token_hash=bytes(doc["_id"]),
            kind=doc["kind"],
            user_id=doc["user_id"],
            email=doc.get("email"),
            created_at=doc["created_at"],
            expires_at=doc["expires_at"],
            data=doc.get("data", {}),
        )

    async def delete_user_tokens(self, user_id: str, kinds: Sequence[str]) -> int:
        query = {"user_id": _key(user_id), "kind": {"$in": [_key(k) for k in kinds]}}
        result = await self._retried(lambda: self._tokens.delete_many(query))
        return int(result.deleted_count)

    @staticmethod
    def _counter_id(key: str, window_start: datetime) -> str:
        return f"{_key(key)}|{int(window_start.timestamp())}"

    async def hit_counter(self, key: str, *, window_start: datetime, expires_at: datetime) -> int:
        """Increment, else insert the first hit; a lost insert race (duplicate `_id`) goes back
        to incrementing. Not an upsert: concurrent upserts are not atomic on every
        MongoDB-wire server, while `_id` uniqueness at insert is."""
        await self._ensure_indexes()
        counter_id = self._counter_id(key, window_start)
        for _ in range(3):
            doc = await self._run(
                lambda: self._counters.find_one_and_update(
                    {"_id": counter_id},
                    {"$inc": {"count": 1}},
                    return_document=ReturnDocument.AFTER,
                )
            )
            if doc is not None:
                return int(doc["count"])
            first = {"_id": counter_id, "key": key, "count": 1, "expires_at": expires_at}
            try:
                await self._run(partial(self._counters.insert_one, first))
            except DuplicateKeyError:
                continue
            return 1
        raise StoreUnavailable("counter contention")

    async def get_counter(self, key: str, *, window_start: datetime) -> int:
        query = {"_id": self._counter_id(key, window_start)}
        doc = await self._run(lambda: self._counters.find_one(query))
        return 0 if doc is None else int(doc["count"])

    async def clear_counter(self, key: str) -> None:
        await self._run(lambda: self._counters.delete_many({"key": _key(key)}))

    async def close(self) -> None:
        if self._owns_client:
            await self._db.client.close()
