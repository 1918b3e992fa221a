"""Importing users from an accounts-js database (`@accounts/mongo`), for teams leaving it.

What one accounts-js user document becomes here (`from_accountsjs`), and the import itself
(`import_users`): through the store contract only, each user in one write keeping its id and
creation time, so the application's own references to user ids stay true. Idempotent, hence
resumable: a user whose id is here already is left alone (but a deactivation is carried, so a
run cut short never leaves an account active that was not). Sessions are not carried over:
users log in again. Nothing here reads a password hash but to hand it on; no report, log or
error holds one. Must not import a database driver (the source is read by
`stores/accountsjs.py`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import (
    AccountsError,
    EmailAlreadyExists,
    IdentityAlreadyLinked,
    UserAlreadyExists,
    UsernameAlreadyExists,
)
from .stores.base import Store, canonical_email
from .types import Email
from .validation import validate_email, validate_extra, validate_username

__all__ = ["ImportReport", "ImportedUser", "Refused", "from_accountsjs", "import_users"]

logger = logging.getLogger("accounts_server.importing")

#: Fields of an accounts-js user document that are not the application's own.
_ACCOUNTSJS_FIELDS = frozenset(
    {"_id", "id", "username", "emails", "services", "createdAt", "updatedAt", "deactivated"}
)
#: `services` entries that are not external identities (passwords, tokens, factors).
_NOT_IDENTITIES = frozenset({"password", "email", "resume", "magicLink", "two-factor"})
#: Where our password service reads an accounts-js bcrypt hash (and upgrades it at the first
#: login): accounts-js's own layout, `services.password.bcrypt`.
_PASSWORD_SERVICE = "password"  # noqa: S105 (a service name)


class Refused(Exception):
    """A source user that cannot be imported as it is; `reason` says why (never a value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ImportedUser:
    """One accounts-js user as it will be created here."""

    id: str
    username: str | None
    emails: tuple[Email, ...]
    bcrypt: str | None
    identities: tuple[tuple[str, str], ...]
    deactivated: bool
    created_at: datetime | None
    extra: dict[str, Any]


def from_accountsjs(doc: Mapping[str, Any], *, drop_two_factor: bool = False) -> ImportedUser:
    """The user an `@accounts/mongo` document describes.

    Raises:
        Refused: an id, username, address or field this server refuses; or a TOTP factor,
            which is not carried (without `drop_two_factor`, so no account loses its second
            factor silently).
    """
    user_id = doc.get("_id")
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 64 or not user_id.isprintable():
        raise Refused("its _id is not an id this server can keep")
    services = doc.get("services", {})
    if not isinstance(services, Mapping):
        raise Refused("services is not an object")
    if services.get("two-factor") and not drop_two_factor:
        raise Refused("it has two-factor authentication, which is not carried over")
    try:
        username = doc.get("username")
        username = None if username is None else validate_username(username)
    except AccountsError:
        raise Refused("its username is one this server refuses") from None
    return ImportedUser(
        id=user_id,
        username=username,
        emails=_emails(doc.get("emails")),
        bcrypt=_bcrypt(services.get(_PASSWORD_SERVICE)),
        identities=_identities(services),
        deactivated=doc.get("deactivated") is True,
        created_at=_time(doc.get("createdAt")),
        extra=_extra(doc),
    )


def _emails(entries: object) -> tuple[Email, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise Refused("emails is not a list")
    emails = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise Refused("an email entry is not an object")
        try:
            address = validate_email(entry.get("address"))
        except AccountsError:
            raise Refused("an email address is one this server refuses") from None
        emails.append(Email(address, entry.get("verified") is True))
    return tuple(emails)


def _bcrypt(password: object) -> str | None:
    hashed = password.get("bcrypt") if isinstance(password, Mapping) else None
    if hashed is None:
        return None
    if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
        raise Refused("services.password.bcrypt is not a bcrypt hash")
    return hashed


def _identities(services: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    found = []
    for name, data in services.items():
        if name in _NOT_IDENTITIES or not isinstance(data, Mapping) or "id" not in data:
            continue
        subject = data["id"]
        if isinstance(subject, bool) or not isinstance(subject, str | int) or subject == "":
            raise Refused(f"services.{name}.id is not a provider's user id")
        found.append((str(name), str(subject)))
    return tuple(found)


def _time(value: object) -> datetime | None:
    """accounts-js's `dateProvider` writes epoch milliseconds (a custom one may write dates)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    raise Refused("createdAt is not a time")


def _extra(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The application's fields (`profile`, anything `validateNewUser` kept), dates as ISO."""
    fields = {k: _plain(v) for k, v in doc.items() if k not in _ACCOUNTSJS_FIELDS}
    try:
        return validate_extra(fields)
    except AccountsError as exc:
        raise Refused(f"its fields are ones this server refuses: {exc.message}") from None


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class ImportReport:
    """What an import did (or, with `dry_run`, would do), by accounts-js user id."""

    dry_run: bool
    imported: int = 0
    #: Here already, from an earlier run: left as they are.
    already: int = 0
    #: Here already but active, and deactivated in accounts-js: deactivated now.
    deactivated_now: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: A username, address or identity another user here has.
    conflicts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.imported or self.deactivated_now)


async def import_users(
    store: Store,
    documents: AsyncIterable[Mapping[str, Any]],
    *,
    clock: Callable[[], datetime],
    dry_run: bool = False,
    drop_two_factor: bool = False,
    advance: Callable[[], None] = lambda: None,
) -> ImportReport:
    """Import every document (`advance` after each). A user is created with its password
    hash, identities and emails in one write; a conflict or refusal skips that user only.

    Raises:
        StoreUnavailable: either database went away (a run again takes up where it stopped).
    """
    report = ImportReport(dry_run=dry_run)
    async for doc in documents:
        source_id = str(doc.get("_id"))
        try:
            user = from_accountsjs(doc, drop_two_factor=drop_two_factor)
        except Refused as refused:
            report.skipped.append((source_id, refused.reason))
        else:
            await _import_one(store, user, report, clock)
        advance()
    return report


async def _import_one(
    store: Store, user: ImportedUser, report: ImportReport, clock: Callable[[], datetime]
) -> None:
    existing = await store.find_user_by_id(user.id)
    if existing is not None:
        report.already += 1
        if user.deactivated and not existing.deactivated:
            report.deactivated_now += 1
            if not report.dry_run:
                await store.set_user_deactivated(user.id, True, now=clock())
        return
    if report.dry_run:
        conflict = await _conflict(store, user)
        if conflict is None:
            report.imported += 1
        else:
            report.conflicts.append((user.id, conflict))
        return
    try:
        await store.create_user(
            user_id=user.id,
            created_at=user.created_at,
            username=user.username,
            emails=user.emails,
            extra=user.extra,
            services={} if user.bcrypt is None else {_PASSWORD_SERVICE: {"bcrypt": user.bcrypt}},
            identities=user.identities,
            now=clock(),
        )
    except UserAlreadyExists:  # another run got there first
        report.already += 1
        return
    except (UsernameAlreadyExists, EmailAlreadyExists, IdentityAlreadyLinked):
        report.conflicts.append((user.id, await _conflict(store, user) or "a unique value"))
        return
    # The same write would be better, but the contract creates users active; a run cut short
    # here is finished by the next, which carries the deactivation of a user it finds.
    if user.deactivated:
        await store.set_user_deactivated(user.id, True, now=clock())
    report.imported += 1


async def _conflict(store: Store, user: ImportedUser) -> str | None:
    """Which of the user's unique values another user here has, by that user's id."""
    if user.username is not None:
        holder = await store.find_user_by_username(user.username)
        if holder is not None:
            return f"its username is user {holder.id}'s"
    for position, email in enumerate(user.emails):
        holder = await store.find_user_by_email(email.address)
        if holder is not None:
            return f"its email #{position + 1} is user {holder.id}'s"
    for provider, subject in user.identities:
        holder = await store.find_user_by_identity(provider, subject)
        if holder is not None:
            return f"its {provider} identity is user {holder.id}'s"
    canonical = [canonical_email(e.address) for e in user.emails]
    if len(set(canonical)) != len(canonical):
        return "two of its email addresses are one here"
    return None
