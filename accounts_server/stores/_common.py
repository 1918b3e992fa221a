"""What both stores do the same way beyond the contract: naming the conflict a unique
constraint reports, the ranges `list_users(search=...)` filters on, and what becomes of stored
addresses that a new `canonical_email` makes one. Private to `stores/`; must not import a
database driver.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ..errors import (
    EmailAlreadyExists,
    IdentityAlreadyLinked,
    UserAlreadyExists,
    UsernameAlreadyExists,
)
from .base import canonical_email, canonical_username

__all__ = [
    "claim",
    "demoted",
    "demoted_range",
    "holds",
    "report_demoted",
    "search_ranges",
    "unique_conflict",
]

logger = logging.getLogger("accounts_server.stores")

#: The last code point, above every other. A noncharacter (category Cn), which
#: `validate_username` and `validate_email` refuse, so no stored identifier holds it.
_LAST = "\U0010ffff"


def unique_conflict(
    constraint: str,
) -> UsernameAlreadyExists | EmailAlreadyExists | IdentityAlreadyLinked | UserAlreadyExists:
    """The error for a user write a unique constraint refused.

    `constraint` names the constraint as the database reports it (SQLite's `table.column`,
    MongoDB's index name or key pattern), never the duplicated value: that is user input and
    may spell anything, `emails` included. A user has four unique keys, so a constraint that
    is not its id's, an email's or an identity's is the username's.
    """
    if constraint.endswith("users.id"):
        return UserAlreadyExists()
    if "email" in constraint:
        return EmailAlreadyExists()
    if "identit" in constraint:
        return IdentityAlreadyLinked()
    return UsernameAlreadyExists()


def search_ranges(search: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """`list_users(search=...)` as half-open ranges `[low, high)`, on the canonical username and
    on the canonical email, of the values that start with `search` canonicalised the same way.

    Ranges, not LIKE or a regex, so nothing in `search` is syntax. Both databases order
    strings by code point (SQLite's BINARY collation and MongoDB's default compare UTF-8
    bytes), so a prefix followed by the last code point bounds every value with that prefix.
    """
    name, mail = canonical_username(search), canonical_email(search)
    return (name, name + _LAST), (mail, mail + _LAST)


# -- recanonicalisation: addresses that were two and are now one ------------------------------
#
# When `canonical_email` changes (`CANONICAL_EMAIL_VERSION`), a store recomputes the canonical
# form of every address it holds. Addresses that were distinct may now be one: `alice@x.com`
# and its fullwidth form on two accounts, or on one. Both stores then do the same:
#
# - Startup does not fail and nothing is deleted or merged. Refusing to start would turn an
#   upgrade into an outage whose fix needs the old version back (this version's CLI opens the
#   same store), for a conflict that the old version had been serving all along; merging or
#   deleting accounts is a decision about people, which only the operator can make.
# - One address keeps the canonical form, so uniqueness holds again from the first request on,
#   and logins, resets and lookups by that address find exactly one account: the best `claim`,
#   a verified address before an unverified one (a look-alike registered by someone else can
#   never be verified: the mail goes to the address as typed), then the older account (a later
#   look-alike is the attack this change closes), then the user's earlier address.
# - Every other address of the group keeps its row or entry, spelling and `verified` flag, and
#   is *demoted*: its canonical form becomes `demoted(...)`, which no lookup asks for, so it no
#   longer finds its account by that address (the account still logs in by username, id or any
#   other address). A prefix search for the address (`list_users(search=...)`, the admin
#   console, `accounts-server users list`) lists both accounts; the user may remove the demoted
#   address or have it verified as usual.
# - A warning names the user ids of each demoted address and of the one that kept the form
#   (never the address: a log holds no more personal data than it must). The database keeps the
#   record too: a demoted canonical form contains `\x1f` (SQLite:
#   `SELECT user_id, address FROM emails WHERE instr(address_canonical, char(31))`; MongoDB:
#   `{"emails.address_canonical": {"$regex": "\x1f"}}`).

#: Follows the canonical form in a demoted address's. A control character: `validate_email`
#: refuses them and NFKC makes none, so no address's canonical form holds one.
_DEMOTED = "\x1f"


def claim(
    verified: bool, created_at: datetime, user_id: str, position: int
) -> tuple[bool, datetime, str, int]:
    """How good one stored address's claim to its canonical form is: the least of a group
    wins. From the address's `verified` flag, its account's creation and id, and its position
    among the account's addresses."""
    return (not verified, created_at, user_id, position)


def demoted(canonical: str, user_id: str, position: int) -> str:
    """The canonical form stored for an address that lost `canonical` to a better claim:
    unique (the user and the address's position), listed by a prefix search for the address,
    never equal to what a lookup asks for."""
    return f"{canonical}{_DEMOTED}conflict:{user_id}:{position}"


def demoted_range(canonical: str) -> tuple[str, str]:
    """`[low, high)` of the demoted forms of `canonical`, for the user's own edits (remove,
    verify), which reach a demoted address too."""
    return canonical + _DEMOTED, canonical + chr(ord(_DEMOTED) + 1)


def holds(stored: str, canonical: str) -> bool:
    """Whether a stored canonical form is `canonical` or one of its demoted forms."""
    low, high = demoted_range(canonical)
    return stored == canonical or low <= stored < high


def report_demoted(store: str, user_id: str, holder_id: str) -> None:
    logger.warning(
        "%s: an address of user %s now has the canonical form of an address of user %s, which "
        "keeps it (a better claim: verified, or an older account); the address stays stored "
        "but no longer finds user %s (see accounts_server/stores/_common.py)",
        store,
        user_id,
        holder_id,
        user_id,
    )
