"""The storage contract every store implements, and the records only stores and the core see.

Critical transitions are single-record compare-and-set (`rotate_refresh`, `invalidate_session`)
and uniqueness comes from the store's unique constraints, never from a prior find: two
concurrent writers cannot both win. Must not import a database driver.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, Protocol

import idna

from ..types import Email, Session, SessionFields, User

__all__ = [
    "AuditQuery",
    "AuditRecord",
    "Credential",
    "OneTimeToken",
    "Store",
    "StoredSession",
    "canonical_email",
    "canonical_username",
    "new_session_id",
    "new_user_id",
]


#: Which rules `canonical_email` follows: raised with every change to them, so a store can
#: tell the canonical forms it holds are outdated and recompute them (SQLite by a migration,
#: MongoDB per document at setup). 1 was `address.strip().lower()`.
CANONICAL_EMAIL_VERSION = 2


def canonical_email(address: str) -> str:
    """The form uniqueness and lookups use, so that spellings of one mailbox are one account:
    `alice@example.com`, `ALICE@EXAMPLE.COM` and their fullwidth forms (U+FF41...);
    `alice@bücher.example` and `alice@xn--bcher-kva.example`. The address itself is stored and
    mailed as given.

    The whole address is NFKC-normalised (so a fullwidth at sign, U+FF20, is an `@`) and
    trimmed, then split at its last `@`.

    - The local part is NFKC + casefolded, as a username is. Only the receiving server knows
      its rule, but RFC 5321 §2.4 discourages exploiting case, and a second account under a
      case or width variant of someone's address is the look-alike this prevents. Full case
      folding maps `ß` to `ss`: `straße@` and `STRASSE@` (its upper case) are one address.
    - The domain is mapped by UTS #46 (nontransitional, IDNA2008: how browsers and mail
      software resolve it) and kept as U-labels, so an A-label and its U-label and every case
      and width form are one domain, a search by a partial domain still matches as a prefix,
      and two domains DNS keeps apart stay apart: `straße.de` (`xn--strae-oqa.de`) is not
      `strasse.de`. A domain that is not valid IDNA (an underscore, an address literal, a
      search prefix ending in `-`) falls back to NFKC + casefold: refusing addresses is
      `validate_email`'s job, not this function's.

    Letters of different scripts that merely look alike (Cyrillic and Latin small a, U+0430
    and U+0061) stay different: no normalisation joins them, and they are different mailboxes.
    """
    # Trimmed after NFKC, which may make a space (U+00B4 is a space and a combining acute).
    normal = unicodedata.normalize("NFKC", address).strip()
    local, at, domain = normal.rpartition("@")
    if not at:
        return _fold(normal)  # no domain: a search prefix, or not an address
    return f"{_fold(local)}@{_canonical_domain(domain)}"


def _fold(text: str) -> str:
    """NFKC after casefold too: casefold's output need not be NFKC (`ǰ`, U+01F0, folds to `j`
    and a combining caron), and a canonical form must be its own canonical form."""
    return unicodedata.normalize("NFKC", text.casefold())


def _canonical_domain(domain: str) -> str:
    try:
        return idna.decode(idna.encode(domain, uts46=True))
    except UnicodeError:  # idna.IDNAError is one
        return _fold(domain)


def canonical_username(username: str) -> str:
    """NFKC then casefold, so 'Alice', 'ALICE' and its fullwidth form are one account."""
    return unicodedata.normalize("NFKC", username).casefold()


def new_user_id() -> str:
    return secrets.token_hex(12)


def new_session_id() -> str:
    """128 random bits: a session id travels in every token, so it must not be guessable.
    Never starting with `-`, so an operator can pass it to a command line as it is (one in 64
    would otherwise read as an option)."""
    while (session_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return session_id


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSession(SessionFields):
    """A session as stored: the session's fields plus the refresh-token state (hashes only).

    The added fields are keyword-only (they follow fields with defaults)."""

    refresh_hash: bytes
    previous_hash: bytes | None = None
    rotated_at: datetime | None = None

    def public(self) -> Session:
        """The same session without its hashes, safe to return or to hand to a hook."""
        return Session(*_session_fields(self))


#: The values of every `SessionFields` field, in declaration order: `Session`'s positional
#: parameters begin with exactly these.
_session_fields = attrgetter(*(f.name for f in fields(SessionFields)))


@dataclass(frozen=True, slots=True)
class OneTimeToken:
    """A single-use token (reset, verify, enroll, magic link) as stored: only its SHA-256."""

    token_hash: bytes
    kind: str
    #: None for tokens that precede any user (an OAuth `state`).
    user_id: str | None
    created_at: datetime
    expires_at: datetime
    #: The address the token was sent to, for verify/enroll/reset.
    email: str | None = None
    #: What the flow needs back when the token is redeemed (JSON values only).
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Credential:
    """A factor a user holds apart from any login service's data (a TOTP secret with its
    recovery codes; passkeys), as stored. `data` holds JSON values whose secrets their owner
    has sealed or hashed. `version` goes up by one with every update: the compare-and-set a
    replay or a concurrent use is decided by."""

    #: Unique across all users (a passkey's credential id is chosen by the authenticator).
    id: str
    user_id: str
    kind: str
    data: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """A security event as kept in the audit log: who, what, when and from where, never a
    secret (codes are stable error codes, `detail` an admin action's name). Ids sort by time,
    so the newest come first by id; `expires_at` is when the store may prune it."""

    id: str
    at: datetime
    expires_at: datetime
    event: str
    user_id: str | None = None
    #: The impersonator, or the admin who acted.
    actor_id: str | None = None
    session_id: str | None = None
    service: str | None = None
    #: The error's stable code, for a refusal.
    code: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    #: An admin action's name (`users.deactivate`) and its operator.
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """Which records `list_audit` answers, newest first: those of `user_id` (None: anyone's)
    whose event is among `events` (empty: any), at or after `since` and before `until`, with
    an id below `before` (the last id of the previous page), at most `limit` (1..500)."""

    user_id: str | None = None
    events: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    before: str | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 500:
            raise ValueError("limit must be between 1 and 500")


class Store(Protocol):
    """What the server and login services need from storage; every store passes one suite.

    Times are timezone-aware UTC datetimes supplied by the caller, so a test clock reaches the
    store too. Any failure to reach the database raises `StoreUnavailable`.
    """

    async def setup(self) -> None:
        """Prepare the database (indexes, migrations). Idempotent; the standalone app calls it
        at startup, and a store must not rely on it having been called for uniqueness."""
        ...

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
        """Create the user with its service data and external identities in one write.
        `user_id` and `created_at` keep an imported user's (None: a new id, and `now`);
        `updated_at` is `now` either way.

        Raises:
            UserAlreadyExists: `user_id` is taken (whatever else would be refused too).
            UsernameAlreadyExists, EmailAlreadyExists, IdentityAlreadyLinked: a unique
                constraint refused it.
        """
        ...

    async def find_user_by_identity(self, provider: str, subject: str) -> User | None: ...

    async def add_identity(
        self, user_id: str, provider: str, subject: str, *, now: datetime
    ) -> bool:
        """Link an external identity. Returns False when no such user exists.

        Raises:
            IdentityAlreadyLinked: any user (this one included) has it already.
        """
        ...

    async def list_user_identities(self, user_id: str) -> list[tuple[str, str]]:
        """The user's linked (provider, subject) pairs, sorted."""
        ...

    async def find_user_by_id(self, user_id: str) -> User | None: ...

    async def find_user_by_username(self, username: str) -> User | None: ...

    async def find_user_by_email(self, address: str) -> User | None: ...

    async def set_user_deactivated(self, user_id: str, deactivated: bool, *, now: datetime) -> bool:
        """Returns False when no such user exists."""
        ...

    async def update_user(
        self,
        user_id: str,
        *,
        now: datetime,
        username: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> User | None:
        """Set a new username and/or replace the extra fields; None leaves a field alone.
        Returns the updated user, or None when no such user exists.

        Raises:
            UsernameAlreadyExists.
        """
        ...

    async def list_users(
        self, *, search: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[User]:
        """Users by creation (oldest first), optionally only those whose canonical username or
        email starts with `search` (canonicalised the same way)."""
        ...

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user with its emails, service data, credentials and sessions."""
        ...

    async def get_service_data(self, user_id: str, service: str) -> Mapping[str, Any] | None: ...

    async def set_service_data(
        self, user_id: str, service: str, data: Mapping[str, Any], *, now: datetime
    ) -> bool:
        """Replace one service's data for the user. Returns False when no such user exists."""
        ...

    async def add_email(self, user_id: str, email: Email, *, now: datetime) -> bool:
        """Append an address. Returns False when no such user exists.

        Raises:
            EmailAlreadyExists: any user (this one included) has it already.
        """
        ...

    async def remove_email(self, user_id: str, address: str, *, now: datetime) -> bool:
        """Returns whether the user had the address."""
        ...

    async def set_email_verified(self, user_id: str, address: str, *, now: datetime) -> bool:
        """Mark one of the user's addresses verified; returns whether the user has it."""
        ...

    async def create_session(self, session: StoredSession) -> None: ...

    async def find_session(self, session_id: str) -> StoredSession | None: ...

    async def find_session_user(self, session_id: str) -> tuple[StoredSession, User | None] | None:
        """The session and, read with it, its user (None if there is no such user): the read
        every authenticated request makes, in one round trip where the database allows."""
        ...

    async def list_user_sessions(self, user_id: str) -> list[StoredSession]:
        """The user's valid sessions, newest first (expired ones may be included; callers
        judge expiry with their clock)."""
        ...

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
        """Compare-and-set: replace the refresh hash only if it is still `expected_hash` and the
        session is valid; the old hash becomes `previous_hash`, `rotated_at` becomes `now`, and
        `ip`/`user_agent` become the rotating client's (the reuse grace is that client's only).
        Returns whether this caller won."""
        ...

    async def touch_session(self, session_id: str, *, now: datetime) -> bool:
        """Set `last_used_at` of a valid session; returns whether there was one."""
        ...

    async def invalidate_session(self, session_id: str, *, now: datetime) -> bool:
        """Returns whether a valid session was invalidated by this call."""
        ...

    async def invalidate_user_sessions(
        self, user_id: str, *, now: datetime, except_ids: Sequence[str] = ()
    ) -> int:
        """Invalidate every valid session of the user but `except_ids`; returns how many."""
        ...

    async def count_active_sessions(self, *, now: datetime) -> int:
        """How many sessions are valid and unexpired at `now` (anyone's)."""
        ...

    async def create_credential(self, credential: Credential) -> bool:
        """Store a new credential. Returns False when no such user exists.

        Raises:
            CredentialAlreadyExists: its id is taken (by any user, this one included).
        """
        ...

    async def find_credential(self, credential_id: str) -> Credential | None: ...

    async def list_user_credentials(
        self, user_id: str, kind: str | None = None
    ) -> list[Credential]:
        """The user's credentials (of `kind`, if given), oldest first."""
        ...

    async def update_credential(
        self, credential_id: str, *, version: int, data: Mapping[str, Any], now: datetime
    ) -> bool:
        """Compare-and-set: replace `data`, add one to `version` and set `updated_at` only if
        the stored version is still `version`. Returns whether this caller won."""
        ...

    async def delete_credential(self, credential_id: str) -> bool:
        """Returns whether this call deleted it."""
        ...

    async def add_audit(self, record: AuditRecord) -> None:
        """Keep one audit record (ids are unique: a duplicate id is the caller's bug)."""
        ...

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """The records `query` selects, newest first."""
        ...

    async def count_audit(
        self, events: Sequence[str], *, since: datetime, step: timedelta, steps: int
    ) -> dict[str, list[int]]:
        """For each of `events`, how many records fall in each of `steps` consecutive windows
        of `step` from `since` (zeros included): a dashboard's histogram, counted where the
        records are rather than read out to be counted."""
        ...

    async def create_token(self, token: OneTimeToken) -> None: ...

    async def consume_token(self, token_hash: bytes, kind: str) -> OneTimeToken | None:
        """Atomically delete and return the token, expired or not (the caller judges expiry and
        can say so): of two concurrent consumers exactly one gets it."""
        ...

    async def delete_user_tokens(self, user_id: str, kinds: Sequence[str]) -> int: ...

    async def hit_counter(self, key: str, *, window_start: datetime, expires_at: datetime) -> int:
        """Atomically add one to the counter of (`key`, `window_start`); returns the new count.
        Counters live in the store so every worker shares them."""
        ...

    async def get_counter(self, key: str, *, window_start: datetime) -> int: ...

    async def clear_counter(self, key: str) -> None: ...

    async def prune_expired(self, *, now: datetime) -> int:
        """Delete sessions, tokens, counters and audit records that expired before `now`;
        returns how many.
        In bounded batches, other coroutines running between them: millions of expired rows
        must not stall the server."""
        ...

    async def close(self) -> None: ...
