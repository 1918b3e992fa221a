"""What only the SQLite store promises: the file, its pragmas, migrations, and failure mode."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accounts_server import Email, EmailAlreadyExists, StoreUnavailable
from accounts_server.stores import SQLiteStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_file_is_created_in_wal_mode_at_the_latest_schema(tmp_path: Path) -> None:
    from accounts_server.stores import sqlite as module

    path = tmp_path / "a.db"
    store = SQLiteStore(path)
    await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA user_version").fetchone() == (len(module._MIGRATIONS),)
    db.close()


async def test_data_survives_reopen_and_migrations_are_not_rerun(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = SQLiteStore(path)
    user = await store.create_user(
        username="alice", emails=[Email("a@example.com")], extra={}, services={}, now=NOW
    )
    await store.close()
    again = SQLiteStore(path)
    assert await again.find_user_by_username("alice") == user
    await again.close()


async def test_unopenable_file_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SQLiteStore(tmp_path / "missing-dir" / "a.db")


async def test_locked_database_is_store_unavailable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = SQLiteStore(path, busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable):
            await store.create_user(username="x", emails=[], extra={}, services={}, now=NOW)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await store.find_user_by_username("x") is None
    await store.close()


async def test_migrates_a_version_2_file_keeping_its_tokens(tmp_path: Path) -> None:
    """Migration 3 rebuilt the tokens table; a file made by version 2 must keep its data."""
    from accounts_server.stores import sqlite as module

    path = tmp_path / "v2.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(module._MIGRATIONS[:2], start=1):
        assert isinstance(script, str)
        db.executescript(script)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute(
        "INSERT INTO users (id, username, username_canonical, created_at, updated_at) "
        "VALUES ('u1', 'old', 'old', 0, 0)"
    )
    db.execute(
        "INSERT INTO tokens (token_hash, kind, user_id, email, created_at, expires_at) "
        "VALUES (x'01', 'reset', 'u1', 'a@example.com', 0, 4102444800)"
    )
    db.close()
    store = SQLiteStore(path)
    token = await store.consume_token(b"\x01", "reset")
    assert token is not None and token.user_id == "u1" and token.data == {}
    await store.close()


def _version_3_file(path: Path, users: list[tuple[str, float, list[tuple[str, bool]]]]) -> None:
    """A file as version 3 of the schema left it: canonical forms by `strip().lower()`."""
    from accounts_server.stores import sqlite as module

    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(module._MIGRATIONS[:3], start=1):
        assert isinstance(script, str)
        db.executescript(script)
        db.execute(f"PRAGMA user_version = {number}")
    for user_id, created_at, emails in users:
        db.execute(
            "INSERT INTO users (id, username, username_canonical, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (user_id, user_id, user_id, created_at, created_at),
        )
        for position, (address, verified) in enumerate(emails):
            db.execute(
                "INSERT INTO emails (address_canonical, address, user_id, verified, position) "
                "VALUES (?, ?, ?, ?, ?)",
                (address.strip().lower(), address, user_id, int(verified), position),
            )
    db.execute(
        "INSERT INTO sessions (id, user_id, valid, created_at, updated_at, last_used_at, "
        "expires_at, refresh_hash) VALUES ('s1', 'carol', 1, 0, 0, 0, 4102444800, x'00')"
    )
    db.close()


async def test_migration_4_recanonicalises_and_keeps_both_addresses_of_a_collision(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Addresses that were two and are now one: both rows stay, as typed; the best claim
    (verified, then older) keeps the canonical form; the other is demoted and reported."""
    path = tmp_path / "v3.db"
    before = [
        ("alice", 100.0, [("alice@example.com", False)]),
        ("mallory", 200.0, [("ＡＬＩＣＥ@example.com", False), ("m@example.com", True)]),
        ("bob", 300.0, [("bob@xn--bcher-kva.example", False)]),
        ("bobby", 400.0, [("Bob@Bücher.example", True)]),  # later, but verified
        ("carol", 500.0, [("Carol@XN--BCHER-KVA.example", True)]),  # merely a new form
        ("dan", 600.0, [("dan@example.com", False), ("ＤＡＮ@example.com", True)]),
    ]
    _version_3_file(path, before)
    with caplog.at_level(logging.WARNING, logger="accounts_server.stores"):
        store = SQLiteStore(path)
    for user_id, _, emails in before:  # nothing lost, nothing respelled
        user = await store.find_user_by_id(user_id)
        assert user is not None and user.emails == tuple(Email(a, v) for a, v in emails)
    assert await store.find_session("s1") is not None

    async def owner(address: str) -> str | None:
        user = await store.find_user_by_email(address)
        return None if user is None else user.id

    assert await owner("ａｌｉｃｅ@example.com") == await owner("alice@example.com") == "alice"
    assert await owner("m@example.com") == "mallory"
    assert await owner("bob@xn--bcher-kva.example") == "bobby"
    assert await owner("carol@bücher.example") == await owner("CAROL@xn--bcher-kva.example")
    assert await owner("carol@bücher.example") == "carol"
    assert await owner("Dan@Example.com") == "dan"
    with pytest.raises(EmailAlreadyExists):
        await store.create_user(
            username="eve", emails=[Email("ALICE@EXAMPLE.COM")], extra={}, services={}, now=NOW
        )
    # Both accounts of a collision are listed for the operator...
    assert [u.id for u in await store.list_users(search="alice@example.com")] == [
        "alice",
        "mallory",
    ]
    # ...every demoted one is reported by user ids, never by address...
    reports = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(reports) == 3
    for loser, holder in (("mallory", "alice"), ("bob", "bobby"), ("dan", "dan")):
        assert any(f"user {loser} " in r and f"user {holder}," in r for r in reports), reports
    assert not any("example" in r for r in reports)
    # ...and its user can still verify and remove it.
    assert await store.set_email_verified("mallory", "alice@example.com", now=NOW)
    assert await store.remove_email("mallory", "alice@example.com", now=NOW)
    mallory = await store.find_user_by_id("mallory")
    assert mallory is not None and mallory.emails == (Email("m@example.com", True),)
    assert await owner("alice@example.com") == "alice"
    await store.close()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="accounts_server.stores"):
        again = SQLiteStore(path)  # migrated once: nothing to report again
    assert caplog.records == []
    assert (await again.find_user_by_email("bob@bücher.example")).id == "bobby"  # type: ignore[union-attr]
    await again.close()


def test_every_canonical_email_version_has_its_migration() -> None:
    """A change of `canonical_email` raises its version and appends a recanonicalisation."""
    from accounts_server.stores import sqlite as module
    from accounts_server.stores.base import CANONICAL_EMAIL_VERSION

    recanonicalisations = module._MIGRATIONS.count(module._recanonicalise_emails)
    assert recanonicalisations == CANONICAL_EMAIL_VERSION - 1


# -- the read cache: point reads of users and sessions answered from memory ------------------


async def _user_and_session(store: SQLiteStore) -> tuple[str, str]:
    from tests.stores.test_contract import make_user, session

    user_id = await make_user(store, "alice", "a@example.com")
    await store.create_session(session(user_id, "s1"))
    return user_id, "s1"


@pytest.mark.parametrize("cache_size", [4096, 0])
async def test_a_commit_by_another_process_holds_on_the_next_read(
    tmp_path: Path, cache_size: int
) -> None:
    """The CLI (`accounts-server sessions revoke`), a second worker or an operator's sqlite3
    shell write through other connections: the running server must see it at once."""
    path = tmp_path / "a.db"
    server_store = SQLiteStore(path, read_cache_size=cache_size)
    user_id, sid = await _user_and_session(server_store)
    for _ in range(2):  # a cached answer, if any, is in place
        assert (await server_store.find_session(sid)).valid  # type: ignore[union-attr]
        assert not (await server_store.find_user_by_id(user_id)).deactivated  # type: ignore[union-attr]

    cli_store = SQLiteStore(path)
    assert await cli_store.invalidate_session(sid, now=NOW)
    assert not (await server_store.find_session(sid)).valid  # type: ignore[union-attr]

    shell = sqlite3.connect(path, isolation_level=None)
    shell.execute("UPDATE users SET deactivated = 1 WHERE id = ?", (user_id,))
    shell.close()
    assert (await server_store.find_user_by_id(user_id)).deactivated  # type: ignore[union-attr]

    await cli_store.delete_user(user_id)
    assert await server_store.find_user_by_id(user_id) is None
    assert await server_store.find_session(sid) is None
    await cli_store.close()
    await server_store.close()


async def test_own_writes_hold_on_the_next_read(tmp_path: Path) -> None:
    from tests.stores.test_contract import h, session

    store = SQLiteStore(tmp_path / "a.db")
    user_id, sid = await _user_and_session(store)
    assert await store.find_session("s2") is None  # a miss is remembered too...
    await store.create_session(session(user_id, "s2"))
    assert await store.find_session("s2") is not None  # ...until that row is written
    assert (await store.find_session(sid)).refresh_hash == h("r0")  # type: ignore[union-attr]
    assert await store.rotate_refresh(sid, expected_hash=h("r0"), new_hash=h("r1"), now=NOW)
    assert (await store.find_session(sid)).refresh_hash == h("r1")  # type: ignore[union-attr]
    assert await store.touch_session(sid, now=NOW + timedelta(hours=1))
    touched = await store.find_session(sid)
    assert touched is not None and touched.last_used_at == NOW + timedelta(hours=1)
    assert await store.set_user_deactivated(user_id, True, now=NOW)
    assert await store.invalidate_session(sid, now=NOW)
    assert not (await store.find_session(sid)).valid  # type: ignore[union-attr]
    assert (await store.find_user_by_id(user_id)).deactivated  # type: ignore[union-attr]
    await store.close()


async def test_a_cached_user_cannot_be_altered_by_a_caller(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    user = await store.create_user(
        username="alice", emails=[], extra={"prefs": {"theme": "dark"}}, services={}, now=NOW
    )
    first = await store.find_user_by_id(user.id)
    assert first is not None
    first.extra["prefs"]["theme"] = "light"  # a careless hook listener
    again = await store.find_user_by_id(user.id)
    assert again is not None and again.extra == {"prefs": {"theme": "dark"}}
    await store.close()
