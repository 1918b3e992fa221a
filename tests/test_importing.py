"""What an accounts-js user document becomes (`from_accountsjs`), case by case; the import
end to end is tests/test_import_accountsjs.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from accounts_server import Email
from accounts_server.importing import Refused, from_accountsjs

BCRYPT = "$2a$10$" + "a" * 53


def doc(**fields: Any) -> dict[str, Any]:
    return {
        "_id": "6b10a003e44f8129bb27b9a4",
        "services": {"password": {"bcrypt": BCRYPT}},
        **fields,
    }


def test_a_full_document() -> None:
    user = from_accountsjs(
        doc(
            username="alice",
            emails=[{"address": "alice@example.com", "verified": True}, {"address": "a@x.io"}],
            services={"password": {"bcrypt": BCRYPT}, "google": {"id": "g1"}, "gh": {"id": 7}},
            createdAt=1796251651290.0,
            updatedAt=1796251651301.0,
            deactivated=True,
            profile={"name": "A", "born": datetime(2000, 1, 2, tzinfo=UTC)},
        )
    )
    assert user.username == "alice"
    assert user.emails == (Email("alice@example.com", True), Email("a@x.io", False))
    assert user.bcrypt == BCRYPT
    assert user.identities == (("google", "g1"), ("gh", "7"))
    assert user.deactivated
    assert user.created_at == datetime.fromtimestamp(1796251651.29, UTC)
    assert user.extra == {"profile": {"name": "A", "born": "2000-01-02T00:00:00+00:00"}}


def test_tokens_and_resume_services_are_not_identities() -> None:
    services = {
        "password": {"bcrypt": BCRYPT, "reset": [{"token": "t"}]},
        "email": {"verificationTokens": [{"token": "v"}]},
        "resume": {"loginTokens": []},
        "magicLink": {"loginTokens": []},
    }
    assert from_accountsjs(doc(username="a", services=services)).identities == ()


def test_a_date_created_at_and_none() -> None:
    when = datetime(2020, 5, 1, 12, 0)
    assert from_accountsjs(doc(createdAt=when)).created_at == when.replace(tzinfo=UTC)
    assert from_accountsjs(doc()).created_at is None


def test_two_factor_is_skipped_unless_dropped() -> None:
    factor = {"password": {"bcrypt": BCRYPT}, "two-factor": {"secret": {"base32": "JBSW"}}}
    with pytest.raises(Refused, match="two-factor"):
        from_accountsjs(doc(username="d", services=factor))
    assert from_accountsjs(doc(username="d", services=factor), drop_two_factor=True).bcrypt


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"_id": 5}, "_id"),
        ({"_id": "x" * 65}, "_id"),
        ({"username": "eve@home"}, "username"),
        ({"username": ""}, "username"),
        ({"emails": [{"address": "not an address"}]}, "email"),
        ({"emails": "a@b.io"}, "emails"),
        ({"services": {"password": {"bcrypt": "plain text"}}}, "bcrypt"),
        ({"services": {"google": {"id": {"$ne": 1}}}}, "google"),
        ({"services": []}, "services"),
        ({"createdAt": "yesterday"}, "createdAt"),
        ({"createdAt": 1e30}, "createdAt"),
        ({"profile": {"a.b": 1}}, "fields"),
        ({"big": 2**63}, "fields"),
    ],
)
def test_refused_documents_say_why_without_the_value(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refused) as refused:
        from_accountsjs(doc(**fields))
    assert reason in refused.value.reason
    assert "eve@home" not in refused.value.reason and "plain text" not in refused.value.reason
