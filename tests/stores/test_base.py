"""The records of `stores/base.py`: a stored session is a session's fields plus hashes, and its
public copy carries every one of those fields and none of the hashes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from accounts_server import Session, StoredSession
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
