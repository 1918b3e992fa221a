"""What only the SQLite store promises: the file, its pragmas, migrations, and failure mode."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConfigurationError,
    ConnectionInfo,
    Email,
    EmailAlreadyExists,
    InvalidToken,
    KeyRing,
    RateLimits,
    StoreUnavailable,
    TokenConfig,
)
from accounts_server.stores import SQLiteStore

from ..helpers import load_key, register
from .test_contract import make_user, session

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


async def test_migration_5_reads_old_sessions_without_amr_and_adds_credentials(
    tmp_path: Path,
) -> None:
    """A file made by version 4: its sessions keep working (no methods recorded), and
    credentials are stored and go with their user like every other child row."""
    from accounts_server.stores import sqlite as module

    from .test_contract import credential

    path = tmp_path / "v4.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number, step in enumerate(module._MIGRATIONS[:4], start=1):
        if callable(step):
            step(db)
        else:
            db.executescript(step)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute(
        "INSERT INTO users (id, username, username_canonical, created_at, updated_at) "
        "VALUES ('u1', 'old', 'old', 0, 0)"
    )
    db.execute(
        "INSERT INTO sessions (id, user_id, valid, created_at, updated_at, last_used_at, "
        "expires_at, refresh_hash) VALUES ('s1', 'u1', 1, 0, 0, 0, 4102444800, x'00')"
    )
    db.close()
    store = SQLiteStore(path)
    old = await store.find_session("s1")
    assert old is not None and old.amr == () and old.refresh_hash == b"\x00"
    await store.create_session(session("u1", "s2", amr=("pwd",)))
    assert [s.amr for s in await store.list_user_sessions("u1")] == [("pwd",), ()]
    assert await store.create_credential(credential("u1"))
    assert await store.find_credential("c1") == credential("u1")
    assert await store.delete_user("u1")
    assert await store.find_credential("c1") is None  # ON DELETE CASCADE
    await store.close()


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
    rotated = await store.rotate_refresh(
        sid, expected_hash=h("r0"), new_hash=h("r1"), now=NOW, ip=None, user_agent=None
    )
    assert rotated
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


# -- the file under a running server: deleted, restored, replaced ----------------------------

#: Every operation checks the file: the detection interval has always passed.
EVERY_TIME = timedelta(0)


def _backup(path: Path, to: Path) -> None:
    """A consistent copy through SQLite's backup API, as an operator's nightly backup is."""
    source, target = sqlite3.connect(path), sqlite3.connect(to)
    source.backup(target)
    target.close()
    source.close()


def _usernames(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    names = [name for (name,) in db.execute("SELECT username FROM users ORDER BY username")]
    db.close()
    return names


async def test_a_deleted_file_fails_closed_and_nothing_is_written_to_it(tmp_path: Path) -> None:
    path = tmp_path / "accounts.db"
    store = SQLiteStore(path, file_check_interval=EVERY_TIME)
    alice = await make_user(store, "alice")
    assert await store.find_user_by_id(alice) is not None  # cached
    unlinked = tmp_path / "unlinked.db"
    os.link(path, unlinked)  # only so that the test can look into the file afterwards
    path.unlink()
    with pytest.raises(StoreUnavailable):
        await store.create_user(username="bob", emails=[], extra={}, services={}, now=NOW)
    with pytest.raises(StoreUnavailable):
        await store.create_session(session(alice, "s1"))
    with pytest.raises(StoreUnavailable):
        await store.find_user_by_id(alice)  # nor answered from it, cache included
    assert not path.exists()  # and no new, empty database in its place
    await store.close()
    assert _usernames(unlinked) == ["alice"]
    db = sqlite3.connect(unlinked)
    assert db.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    db.close()


@pytest.mark.parametrize("how", ["deleted, then restored", "replaced"])
async def test_a_restored_file_is_opened_and_its_data_used(tmp_path: Path, how: str) -> None:
    path, backup = tmp_path / "accounts.db", tmp_path / "backup.db"
    store = SQLiteStore(path, file_check_interval=EVERY_TIME)
    alice = await make_user(store, "alice")
    await store.create_session(session(alice, "s1"))
    _backup(path, backup)
    bob = await make_user(store, "bob")  # after the backup: not in the restored file
    assert await store.invalidate_session("s1", now=NOW)
    assert not (await store.find_session("s1")).valid  # type: ignore[union-attr]
    if how == "replaced":
        shutil.copy(backup, tmp_path / "incoming.db")
        os.replace(tmp_path / "incoming.db", path)
    else:
        path.unlink()
        with pytest.raises(StoreUnavailable):
            await store.find_session("s1")
        shutil.copy(backup, path)
    assert await store.find_user_by_id(bob) is None
    assert (await store.find_session("s1")).valid  # type: ignore[union-attr]
    await make_user(store, "carol")  # and writes go to the restored file
    await store.close()
    assert _usernames(path) == ["alice", "carol"]


async def test_a_restored_file_is_not_read_through_the_old_files_journal(tmp_path: Path) -> None:
    """SQLite names the `-wal` after the path: opened with the old file's, still full of its
    last writes (bob), a restored file would show them. Another connection in the middle of
    a read on the old file (a second worker) must not keep it there."""
    path, backup = tmp_path / "accounts.db", tmp_path / "backup.db"
    store = SQLiteStore(path, file_check_interval=EVERY_TIME)
    await make_user(store, "alice")
    _backup(path, backup)
    await make_user(store, "bob")  # in the old file's WAL, not in the backup
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM users").fetchone()
    path.unlink()
    shutil.copy(backup, path)
    assert await store.find_user_by_username("bob") is None
    assert await store.find_user_by_username("alice") is not None
    reader.execute("COMMIT")
    reader.close()
    await store.close()
    assert _usernames(path) == ["alice"]


async def test_two_workers_on_a_replaced_file_keep_each_others_writes(tmp_path: Path) -> None:
    """The worker that notices first reopens and writes; the other, letting go of the old
    file later, must neither take the new file's journal for its own (checkpointing those
    writes into the old file) nor remove it."""
    path, backup = tmp_path / "accounts.db", tmp_path / "backup.db"
    first = SQLiteStore(path, file_check_interval=EVERY_TIME)
    second = SQLiteStore(path, file_check_interval=EVERY_TIME)
    await make_user(first, "alice")
    await make_user(second, "bob")
    _backup(path, backup)
    await make_user(first, "erin")  # only in the old file
    shutil.copy(backup, tmp_path / "incoming.db")
    os.replace(tmp_path / "incoming.db", path)
    await make_user(first, "carol")  # noticed here, written to the new file
    assert await second.find_user_by_username("carol") is not None  # noticed here
    assert await second.find_user_by_username("erin") is None
    await make_user(second, "dave")
    assert await first.find_user_by_username("dave") is not None
    assert await first.find_user_by_username("carol") is not None
    await first.close()
    await second.close()
    assert _usernames(path) == ["alice", "bob", "carol", "dave"]


async def test_a_deactivation_on_the_restored_file_holds_on_the_running_server(
    tmp_path: Path,
) -> None:
    """Issue 14: after a restore, `accounts-server users deactivate` (a second server on the
    file) must stop the user's live token on the server that was running all along."""

    def server(store: SQLiteStore) -> AccountsServer:
        return AccountsServer(
            store=store,
            tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
            services=[PasswordService()],
            rate_limits=RateLimits(enabled=False),
        )

    path, backup = tmp_path / "accounts.db", tmp_path / "backup.db"
    running = server(SQLiteStore(path, file_check_interval=EVERY_TIME))
    account = await register(running)
    login = await running.login_with_service(
        "password", account.credentials(), ConnectionInfo(ip="192.0.2.1")
    )
    token = login.tokens.access_token
    assert (await running.resume_session(token)).id == account.user_id
    _backup(path, backup)
    path.unlink()
    with pytest.raises(StoreUnavailable):
        await running.resume_session(token)
    shutil.copy(backup, path)
    admin_store = SQLiteStore(path)
    await server(admin_store).deactivate_user(account.user_id)
    await admin_store.close()
    with pytest.raises(InvalidToken):
        await running.resume_session(token)
    await running.store.close()


async def test_writes_check_the_file_every_time_reads_once_per_interval(tmp_path: Path) -> None:
    """The cost model: a stat per write (a commit costs more), none per read until the
    interval has passed, so a cached read stays a few microseconds."""
    path = tmp_path / "accounts.db"
    store = SQLiteStore(path, file_check_interval=timedelta(hours=1))
    alice = await make_user(store, "alice")
    path.unlink()
    assert await store.find_user_by_id(alice) is not None  # not looked at yet
    with pytest.raises(StoreUnavailable):
        await store.create_session(session(alice, "s1"))
    with pytest.raises(StoreUnavailable):  # known to be gone now: reads fail too
        await store.find_user_by_id(alice)
    await store.close()


async def test_a_file_that_is_no_database_is_an_outage_until_a_database_is_back(
    tmp_path: Path,
) -> None:
    path, backup = tmp_path / "accounts.db", tmp_path / "backup.db"
    store = SQLiteStore(path, file_check_interval=EVERY_TIME)
    alice = await make_user(store, "alice")
    _backup(path, backup)
    path.unlink()
    path.write_bytes(b"not a database" * 512)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await store.find_user_by_id(alice)
    os.replace(backup, path)
    assert await store.find_user_by_id(alice) is not None
    await store.close()


async def test_an_in_memory_database_has_no_file_to_check() -> None:
    store = SQLiteStore(":memory:", file_check_interval=EVERY_TIME)
    alice = await make_user(store, "alice")
    assert await store.find_user_by_id(alice) is not None
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.find_user_by_id(alice)


def test_a_negative_check_interval_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStore(tmp_path / "a.db", file_check_interval=timedelta(seconds=-1))


# -- prune: in batches, the event loop free between them -------------------------------------


async def test_requests_run_between_prune_batches_and_see_its_progress(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db", prune_batch_size=100)
    user_id = await make_user(store, "alice")
    for i in range(250):
        await store.create_session(session(user_id, f"old{i}", expires_at=NOW))
    await store.create_session(session(user_id, "live", expires_at=NOW + timedelta(days=1)))
    seen: list[int] = []
    pruning = asyncio.create_task(store.prune_expired(now=NOW + timedelta(seconds=1)))
    while not pruning.done():
        seen.append(len(await store.list_user_sessions(user_id)))
        await asyncio.sleep(0)
    assert await pruning == 250
    assert seen == [251, 151, 51]  # before the prune, then after each full batch
    await store.close()


def test_a_prune_batch_below_one_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteStore(tmp_path / "a.db", prune_batch_size=0)
