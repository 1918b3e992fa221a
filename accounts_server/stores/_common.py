"""What both stores do the same way beyond the contract: naming the conflict a unique
constraint reports, and the ranges `list_users(search=...)` filters on. Private to `stores/`;
must not import a database driver.
"""

from __future__ import annotations

from ..errors import EmailAlreadyExists, IdentityAlreadyLinked, UsernameAlreadyExists
from .base import canonical_email, canonical_username

__all__ = ["search_ranges", "unique_conflict"]

#: The last code point, above every other. A noncharacter (category Cn), which
#: `validate_username` and `validate_email` refuse, so no stored identifier holds it.
_LAST = "\U0010ffff"


def unique_conflict(
    constraint: str,
) -> UsernameAlreadyExists | EmailAlreadyExists | IdentityAlreadyLinked:
    """The error for a user write a unique constraint refused.

    `constraint` names the constraint as the database reports it (SQLite's `table.column`,
    MongoDB's index name or key pattern), never the duplicated value: that is user input and
    may spell anything, `emails` included. A user has three unique keys, so a constraint that
    is neither an email's nor an identity's is the username's.
    """
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
