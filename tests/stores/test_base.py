"""What `stores/base.py` defines beside the contract: a stored session is a session's fields plus
hashes, and its public copy carries every one of those fields and none of the hashes; the
canonical email form every store and service looks addresses up by."""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts_server import Session, StoredSession, canonical_email
from accounts_server.stores.base import new_session_id
from accounts_server.types import SessionFields

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STORED = StoredSession(
    id="s1",
    user_id="u1",
    valid=False,
    created_at=NOW,
    updated_at=NOW + timedelta(seconds=1),
    last_used_at=NOW + timedelta(seconds=2),
    expires_at=NOW + timedelta(days=1),
    ip="203.0.113.7",
    user_agent="test",
    impersonator_id="admin",
    refresh_hash=b"r" * 32,
    previous_hash=b"p" * 32,
    rotated_at=NOW + timedelta(seconds=3),
)


def test_public_copies_every_session_field_and_no_hash() -> None:
    public = STORED.public()
    assert type(public) is Session
    assert public == Session(
        id="s1",
        user_id="u1",
        valid=False,
        created_at=NOW,
        updated_at=NOW + timedelta(seconds=1),
        last_used_at=NOW + timedelta(seconds=2),
        expires_at=NOW + timedelta(days=1),
        ip="203.0.113.7",
        user_agent="test",
        impersonator_id="admin",
        current=False,
    )
    assert not any(isinstance(v, bytes) for v in dataclasses.astuple(public))


def test_one_declaration_of_the_session_fields() -> None:
    shared = [f.name for f in dataclasses.fields(SessionFields)]
    assert [f.name for f in dataclasses.fields(Session)] == [*shared, "current"]
    assert [f.name for f in dataclasses.fields(StoredSession)] == [
        *shared,
        "refresh_hash",
        "previous_hash",
        "rotated_at",
    ]
    # Neither is the other: a stored session cannot stand where a public one is expected.
    assert not issubclass(StoredSession, Session)
    assert not issubclass(Session, StoredSession)


def test_records_stay_frozen_and_slotted() -> None:
    for record in (STORED, STORED.public()):
        assert not hasattr(record, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.id = "other"  # type: ignore[misc]


def test_session_ids_never_read_as_command_line_options() -> None:
    ids = {new_session_id() for _ in range(5000)}
    assert len(ids) == 5000 and not any(i.startswith("-") for i in ids)


@pytest.mark.parametrize(
    ("address", "canonical"),
    [
        ("  Alice@Example.COM ", "alice@example.com"),
        ("ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "alice@example.com"),  # fullwidth, the @ and . too
        ("ſam@example.com", "sam@example.com"),  # long s folds to s
        ("STRAẞE@example.com", "strasse@example.com"),  # local part: full case folding
        ("A@STRAẞE.example", "a@straße.example"),  # domain: UTS #46 keeps ß
        ("a@xn--strae-oqa.example", "a@straße.example"),  # A-label to U-label
        ("alice@xn--bcher-kva.example", "alice@bücher.example"),
        ("alice@bu\u0308cher.example", "alice@bücher.example"),  # decomposed ü
        ("alice@ｂüｃｈｅｒ。example", "alice@bücher.example"),  # ideographic full stop
        ("a＠b@Example.com", "a@b@example.com"),  # the last @ splits
        ("Bob@Ex_Ample.com", "bob@ex_ample.com"),  # not IDNA: NFKC + casefold
        ("Bob@-Example.com", "bob@-example.com"),
        ("Bob@[192.0.2.1]", "bob@[192.0.2.1]"),
        ("ALICE@", "alice@"),  # search prefixes
        ("ALICE@BÜ", "alice@bü"),
        ("ALICE", "alice"),
    ],
)
def test_canonical_email(address: str, canonical: str) -> None:
    assert canonical_email(address) == canonical


_label = st.text(
    st.characters(categories=("Ll", "Lu", "Lt", "Lm", "Lo", "Mn", "Nd", "Pd", "Sk")),
    min_size=1,
    max_size=12,
)
_addresses = st.builds(
    "{}@{}".format,
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.lists(_label, min_size=1, max_size=3).map(".".join),
)


@settings(max_examples=300)
@given(st.one_of(_addresses, st.text(st.characters(codec="utf-8"), max_size=40)))
def test_a_canonical_email_is_its_own_canonical_form_in_every_normalisation_form(
    address: str,
) -> None:
    """So a stored canonical form is found by a lookup of itself, and recanonicalising a store
    changes nothing twice."""
    canonical = canonical_email(address)
    assert canonical_email(canonical) == canonical
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        assert canonical_email(unicodedata.normalize(form, address)) == canonical
