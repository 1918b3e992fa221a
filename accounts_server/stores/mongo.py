"""The MongoDB store, on PyMongo's async API or a motor database handle.

One document per user (emails and per-service data embedded; the service data is projected out
of every user read), one per session and one per credential. Uniqueness comes from unique
indexes, never from a prior find; every critical transition is a single-document conditional
update, so no multi-document transaction is needed and a standalone mongod works. Every value
that reaches a filter is checked to be a string (a version: an integer) first: a JSON object
such as `{"$ne": null}` can never become a query operator.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

try:
    from bson.codec_options import CodecOptions
    from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
    from pymongo.errors import DuplicateKeyError, PyMongoError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "MongoStore needs the [mongo] extra: pip install 'accounts-server[mongo]'"
    ) from exc

from ..errors import (
    ConfigurationError,
    CredentialAlreadyExists,
    EmailAlreadyExists,
    IdentityAlreadyLinked,
    InvalidRequest,
    StoreUnavailable,
    UsernameAlreadyExists,
)
from ..types import Email, User
from ..validation import check_service_name
from ._common import claim, demoted, holds, report_demoted, search_ranges, unique_conflict
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

_USERNAME_INDEX = "username_unique"
_EMAIL_INDEX = "email_unique"
_IDENTITY_INDEX = "identity_unique"
#: The `CANONICAL_EMAIL_VERSION` a user document's canonical forms follow (absent: version 1).
_CANONICAL_VERSION = "email_canonical_version"
#: "E11000 duplicate key error collection: db.users index: email_unique dup key: {...}": a
#: database name holds no space and the collection is ours, so the first match is the index.
_INDEX_IN_MESSAGE = re.compile(r" index: (\S+)")
#: Identities are stored as one string per (provider, subject): a plain multikey unique index,
#: which every MongoDB-wire server enforces, unlike compound multikey ones.
_SEP = "\x1f"


def _identity(provider: str, subject: str) -> str:
    return f"{_key(provider)}{_SEP}{_key(subject)}"


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


def _violated_index(exc: DuplicateKeyError) -> str:
    """The name of the unique index a duplicate-key error reports (MongoDB and the wire server
    both put it in the message); not the whole message, which quotes the duplicated value."""
    found = _INDEX_IN_MESSAGE.search(str((exc.details or {}).get("errmsg", exc)))
    return "" if found is None else found.group(1)


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


class MongoStore:
    """Store on a MongoDB database: a PyMongo `AsyncDatabase` or a motor
    `AsyncIOMotorDatabase`. With a handle you pass in, your client's timeouts apply;
    `from_url` sets DESIGN's (server selection 3 s, connect 2 s, operation 5 s).

    Indexes are created by `setup()` (idempotent), and before the first write if nobody
    called it, so uniqueness never depends on remembering to. `prune_batch_size` bounds the
    documents one step of `prune_expired` deletes.

    Raises:
        ConfigurationError: a `prune_batch_size` below 1.
    """

    def __init__(
        self, database: Any, *, owns_client: bool = False, prune_batch_size: int = 1000
    ) -> None:
        if prune_batch_size < 1:
            raise ConfigurationError("prune_batch_size must be at least 1")
        self._prune_batch = prune_batch_size
        self._db = database.with_options(codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))
        self._users = self._db["users"]
        self._sessions = self._db["sessions"]
        self._tokens = self._db["tokens"]
        self._counters = self._db["counters"]
        self._credentials = self._db["credentials"]
        self._audit = self._db["audit"]
        self._owns_client = owns_client
        self._indexed = False

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
    ) -> MongoStore:
        """A store with its own client. The operation bound is the socket timeout: PyMongo's
        `timeoutMS` would also replace the server-selection bound, so a database that is down
        would take the operation timeout, not the selection timeout, to report."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=int(server_selection_timeout * 1000),
            connectTimeoutMS=int(connect_timeout * 1000),
            socketTimeoutMS=int(operation_timeout * 1000),
            tz_aware=True,
        )
        return cls(client[db_name], owns_client=True, prune_batch_size=prune_batch_size)

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await operation()
        except DuplicateKeyError:
            raise
        except PyMongoError as exc:
            # One line per failure; PyMongo's message carries a topology description of
            # hundreds of characters, which goes to debug.
            summary = str(exc).split(", Timeout:", 1)[0].split("\n", 1)[0][:160]
            logger.warning("MongoDB unavailable: %s: %s", type(exc).__name__, summary)
            logger.debug("MongoDB error in full: %s", exc)
            raise StoreUnavailable() from exc

    async def setup(self) -> None:
        """The store contract's preparation step: `setup_indexes()`."""
        await self.setup_indexes()

    async def setup_indexes(self) -> None:
        """Create the unique and TTL indexes and bring canonical email forms up to date
        (`_recanonicalise_emails`); safe to call any number of times."""
        await self._run(
            lambda: self._users.create_indexes(
                [
                    # Sparse, and the fields are absent (not null, not []) when a user has
                    # no username or no email, so those users never collide.
                    IndexModel(
                        [("username_canonical", ASCENDING)],
                        name=_USERNAME_INDEX,
                        unique=True,
                        sparse=True,
                    ),
                    IndexModel(
                        [("emails.address_canonical", ASCENDING)],
                        name=_EMAIL_INDEX,
                        unique=True,
                        sparse=True,
                    ),
                    IndexModel(
                        [("identities", ASCENDING)], name=_IDENTITY_INDEX, unique=True, sparse=True
                    ),
                    # So that setup finds the documents to recanonicalise without a scan.
                    IndexModel([(_CANONICAL_VERSION, ASCENDING)], name=_CANONICAL_VERSION),
                ]
            )
        )
        await self._run(
            lambda: self._sessions.create_indexes(
                [
                    IndexModel([("user_id", ASCENDING)], name="user"),
                    # Housekeeping only: expiry is always checked in code too.
                    IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0),
                ]
            )
        )
        # Token documents are keyed by their hash (`_id`, unique by nature).
        await self._run(
            lambda: self._tokens.create_indexes(
                [
                    IndexModel([("user_id", ASCENDING), ("kind", ASCENDING)], name="user"),
                    IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0),
                ]
            )
        )
        await self._run(
            lambda: self._counters.create_indexes(
                [
                    IndexModel([("key", ASCENDING)], name="key"),
                    IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0),
                ]
            )
        )
        # Credential documents are keyed by their id (`_id`, unique by nature); no expiry.
        await self._run(
            lambda: self._credentials.create_indexes(
                [IndexModel([("user_id", ASCENDING), ("kind", ASCENDING)], name="user")]
            )
        )
        # Audit records: by user or event, newest first; gone when they expire.
        await self._run(
            lambda: self._audit.create_indexes(
                [
                    IndexModel([("user_id", ASCENDING), ("_id", DESCENDING)], name="user"),
                    IndexModel([("event", ASCENDING), ("_id", DESCENDING)], name="event"),
                    IndexModel([("expires_at", ASCENDING)], name="ttl", expireAfterSeconds=0),
                ]
            )
        )
        await self._recanonicalise_emails()
        self._indexed = True

    async def _ensure_indexes(self) -> None:
        if not self._indexed:
            await self.setup_indexes()

    async def _recanonicalise_emails(self) -> None:
        """Recompute the canonical forms of every user document written under an older
        `canonical_email` (found by its `email_canonical_version`). Per document, so a run cut
        short, or users an older version of this store creates meanwhile (a rolling upgrade),
        are taken up by the next setup, and workers doing it at once agree: every change is a
        compare-and-set. (An address an older version adds to an up-to-date user keeps its
        old form: finish a rolling upgrade before relying on the new one.) Addresses that are
        now one all stay; the best claim keeps the canonical form, the others are demoted and
        reported, as `_common` describes and justifies. Documents may come in any order: each
        step keeps the better of two claims.
        """
        outdated = {_CANONICAL_VERSION: {"$ne": CANONICAL_EMAIL_VERSION}}

        async def batch() -> list[str]:
            cursor = self._users.find(outdated, {"_id": 1}).limit(500)
            return [doc["_id"] async for doc in cursor]

        while user_ids := await self._run(batch):
            for user_id in user_ids:
                await self._recanonicalise(user_id)

    async def _recanonicalise(self, user_id: str) -> None:
        """Bring one user document to the current version, retried when another writer got
        in between.

        Raises:
            StoreUnavailable: it kept changing under us.
        """
        projection = {"emails": 1, "created_at": 1, _CANONICAL_VERSION: 1}
        for _ in range(5):
            doc = await self._run(partial(self._users.find_one, {"_id": user_id}, projection))
            if doc is None or doc.get(_CANONICAL_VERSION) == CANONICAL_EMAIL_VERSION:
                return
            settled = await self._settle_claims(doc)
            if settled is None:
                continue
            after, lost_to = settled
            query: dict[str, Any] = {"_id": user_id, "emails": {"$exists": False}}
            change: dict[str, Any] = {_CANONICAL_VERSION: CANONICAL_EMAIL_VERSION}
            if "emails" in doc:
                query["emails"] = doc["emails"]
                change["emails"] = after
            try:
                result = await self._run(partial(self._users.update_one, query, {"$set": change}))
            except DuplicateKeyError:  # a writer took one of the forms meanwhile
                continue
            if result.matched_count == 1:
                for holder_id in lost_to:
                    report_demoted("MongoDB", user_id, holder_id)
                return
        raise StoreUnavailable("too much contention while recanonicalising a user's emails")

    async def _settle_claims(
        self, doc: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[str]] | None:
        """The document's emails with recomputed canonical forms: the form itself for the best
        claim to it, a demoted form for every other. With the user ids holding the forms this
        document's addresses newly lost. A form another document holds with a worse claim is
        taken from it: its entry is demoted there and then. None when that document changed
        under us.
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
            holders[form] = (user_id, position)
            query = {"emails.address_canonical": form, "_id": {"$ne": user_id}}
            other = await self._run(
                partial(self._users.find_one, query, {"emails": 1, "created_at": 1})
            )
            if other is None:
                continue
            at, entry = next(
                (i, e) for i, e in enumerate(other["emails"]) if e["address_canonical"] == form
            )
            # An outdated document may hold as its old form what is not its address's new one:
            # no claim then, and its own recanonicalisation finds its form.
            rival = canonical_email(entry["address"]) == form
            theirs = claim(bool(entry["verified"]), _created(other), other["_id"], at)
            if rival and theirs < mine:
                holders[form] = (other["_id"], None)
            elif not await self._demote(other, at, form, holder_id=user_id if rival else None):
                return None
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
    ) -> User:
        await self._ensure_indexes()
        canonical = [canonical_email(e.address) for e in emails]
        if len(set(canonical)) != len(canonical):
            # A multikey unique index does not look inside one document.
            raise EmailAlreadyExists()
        doc: dict[str, Any] = {
            "_id": new_user_id(),
            "username": username,
            "deactivated": False,
            "extra": dict(extra),
            "services": {check_service_name(k): dict(v) for k, v in services.items()},
            "created_at": now,
            "updated_at": now,
            _CANONICAL_VERSION: CANONICAL_EMAIL_VERSION,
        }
        if username is not None:
            doc["username_canonical"] = canonical_username(username)
        if identities:
            doc["identities"] = [_identity(provider, subject) for provider, subject in identities]
        if emails:
            doc["emails"] = [
                {"address": e.address, "address_canonical": c, "verified": e.verified}
                for e, c in zip(emails, canonical, strict=True)
            ]
        try:
            await self._run(lambda: self._users.insert_one(doc))
        except DuplicateKeyError as exc:
            raise unique_conflict(_violated_index(exc)) from exc
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

    async def add_identity(self, user_id: str, provider: str, subject: str) -> bool:
        key = _identity(provider, subject)
        query = {"_id": _key(user_id), "identities": {"$ne": key}}
        update = {"$push": {"identities": key}}
        return await self._push_unique(user_id, query, update, IdentityAlreadyLinked)

    async def _push_unique(
        self,
        user_id: str,
        query: Mapping[str, Any],
        update: Mapping[str, Any],
        conflict: type[EmailAlreadyExists | IdentityAlreadyLinked],
    ) -> bool:
        """Append to one of the user's arrays a value no user may share. The unique index
        refuses it when another user has it; `query` (`{"$ne": value}`) when this one has, as a
        multikey unique index does not look inside one document. Returns False when no such
        user exists.

        Raises:
            `conflict`: some user, this one included, has the value already.
        """
        await self._ensure_indexes()
        try:
            result = await self._run(partial(self._users.update_one, query, update))
        except DuplicateKeyError as exc:
            raise conflict() from exc
        if result.matched_count == 1:
            return True
        if await self.find_user_by_id(user_id) is None:
            return False
        raise conflict()  # this user has it already

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
        changes: dict[str, Any] = {"updated_at": now}
        if username is not None:
            changes.update(username=username, username_canonical=canonical_username(username))
        if extra is not None:
            changes["extra"] = dict(extra)
        try:
            doc = await self._run(
                lambda: self._users.find_one_and_update(
                    {"_id": _key(user_id)},
                    {"$set": changes},
                    projection=_USER_PROJECTION,
                    return_document=ReturnDocument.AFTER,
                )
            )
        except DuplicateKeyError as exc:
            raise UsernameAlreadyExists() from exc
        return self._user(doc)

    async def list_users(
        self, *, search: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[User]:
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
                .limit(max(0, limit))
            )
            return [doc async for doc in cursor]

        return [user for doc in await self._run(fetch) if (user := self._user(doc))]

    async def delete_user(self, user_id: str) -> bool:
        key = _key(user_id)
        # The user first: a session, token or credential left by a crash here resolves to no
        # user, so it is dead; the TTL index removes sessions and tokens, and deleting the user
        # again removes any of them (`create_credential` relies on this order).
        result = await self._run(lambda: self._users.delete_one({"_id": key}))
        for collection in (self._sessions, self._tokens, self._credentials):
            await self._run(partial(collection.delete_many, {"user_id": key}))
        return bool(result.deleted_count == 1)

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
        return await self._push_unique(user_id, query, update, EmailAlreadyExists)

    async def remove_email(self, user_id: str, address: str, *, now: datetime) -> bool:
        canonical = canonical_email(_key(address))
        return await self._edit_email(user_id, canonical, None, now)

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
        result = await self._run(lambda: self._sessions.update_many(query, update))
        return int(result.modified_count)

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

    async def prune_expired(self, *, now: datetime) -> int:
        """The TTL indexes do this on their own; this is for an explicit prune. In batches of
        `prune_batch_size` documents, found through the expiry index and deleted by `_id`:
        one `delete_many` over millions would outlast the operation timeout."""
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
        result = await self._run(lambda: self._tokens.delete_many(query))
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
