"""The embedded default store: one SQLite file, zero set-up.

Queries run on the event loop's thread with the stdlib driver: a point query on an indexed
key takes microseconds, far less than the thread hop an async wrapper pays per query, and
running every method to completion without awaiting makes each one atomic within the process.
Across processes, SQLite's own locking (WAL, `BEGIN IMMEDIATE`, busy timeout) serialises
writers; conditional `UPDATE ... WHERE` statements are the compare-and-set.

An open connection follows the file it opened, not the path: a file deleted or replaced (a
restore) under a running server would go on answering from, and writing into, a file nobody
else sees. The store compares the file at the path with the one it has open and fails closed
(`StoreUnavailable`) until a file is there again, then opens that one.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    ConfigurationError,
    CredentialAlreadyExists,
    EmailAlreadyExists,
    IdentityAlreadyLinked,
    StoreUnavailable,
    UserAlreadyExists,
    UsernameAlreadyExists,
)
from ..types import Email, User
from ._common import (
    claim,
    demoted,
    demoted_range,
    report_demoted,
    search_ranges,
    unique_conflict,
)
from .base import (
    AuditQuery,
    AuditRecord,
    Credential,
    OneTimeToken,
    StoredSession,
    canonical_email,
    canonical_username,
    new_user_id,
)

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")
_monotonic = time.monotonic


def _recanonicalise_emails(db: sqlite3.Connection) -> None:
    """Migration 4, and again after every change of `canonical_email`: recompute the canonical
    form of every stored address, within the migration's one transaction (a crash leaves the
    file as it was). Addresses that are now one all keep their rows; the best claim keeps the
    canonical form, the others are demoted and reported, as `_common` describes and justifies.
    """
    rows = db.execute(
        "SELECT e.rowid, e.address_canonical, e.address, e.user_id, e.verified, e.position, "
        "COALESCE(u.created_at, 0) FROM emails e LEFT JOIN users u ON u.id = e.user_id"
    ).fetchall()
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(canonical_email(row[2]), []).append(row)
    final: dict[int, str] = {}
    for canonical, group in groups.items():
        group.sort(key=lambda r: claim(bool(r[4]), _dt(r[6]), r[3], r[5]))
        holder, *others = group
        final[holder[0]] = canonical
        for rowid, stored, _, user_id, _, position, _ in others:
            final[rowid] = demoted(canonical, user_id, position)
            if stored != final[rowid]:
                report_demoted("SQLite", user_id, holder[3])
    changed = [(final[row[0]], row[0]) for row in rows if final[row[0]] != row[1]]
    # Through values no row holds (`strip` removes a leading `\x1f` from any address, and a
    # demoted form goes on with `conflict:`), so no row takes a primary key another still has.
    db.executemany(
        "UPDATE emails SET address_canonical = ? WHERE rowid = ?",
        [(f"\x1fmigrating:{rowid}", rowid) for _, rowid in changed],
    )
    db.executemany("UPDATE emails SET address_canonical = ? WHERE rowid = ?", changed)


#: Schema migrations, applied in order; `PRAGMA user_version` records how many ran. A
#: callable is a data migration, run with the transaction's connection.
_MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT,
        username_canonical TEXT UNIQUE,
        deactivated INTEGER NOT NULL DEFAULT 0,
        extra TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE emails (
        address_canonical TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        verified INTEGER NOT NULL DEFAULT 0,
        position INTEGER NOT NULL
    );
    CREATE INDEX emails_user ON emails(user_id);
    CREATE TABLE user_services (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        service TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (user_id, service)
    ) WITHOUT ROWID;
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        valid INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_used_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        refresh_hash BLOB NOT NULL,
        previous_hash BLOB,
        rotated_at REAL,
        ip TEXT,
        user_agent TEXT,
        impersonator_id TEXT
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE INDEX sessions_expiry ON sessions(expires_at);
    """,
    """
    CREATE TABLE tokens (
        token_hash BLOB PRIMARY KEY,
        kind TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        email TEXT,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX tokens_user ON tokens(user_id, kind);
    CREATE INDEX tokens_expiry ON tokens(expires_at);
    CREATE TABLE counters (
        key TEXT NOT NULL,
        window_start REAL NOT NULL,
        count INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (key, window_start)
    ) WITHOUT ROWID;
    CREATE INDEX counters_expiry ON counters(expires_at);
    """,
    # 3: tokens may precede any user and carry data (OAuth state); external identities.
    """
    CREATE TABLE tokens_v3 (
        token_hash BLOB PRIMARY KEY,
        kind TEXT NOT NULL,
        user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
        email TEXT,
        data TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    INSERT INTO tokens_v3 (token_hash, kind, user_id, email, created_at, expires_at)
        SELECT token_hash, kind, user_id, email, created_at, expires_at FROM tokens;
    DROP TABLE tokens;
    ALTER TABLE tokens_v3 RENAME TO tokens;
    CREATE INDEX tokens_user ON tokens(user_id, kind);
    CREATE INDEX tokens_expiry ON tokens(expires_at);
    CREATE TABLE identities (
        provider TEXT NOT NULL,
        subject TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        PRIMARY KEY (provider, subject)
    ) WITHOUT ROWID;
    CREATE INDEX identities_user ON identities(user_id);
    """,
    # 4: `canonical_email` version 2 (NFKC, casefold, IDNA).
    _recanonicalise_emails,
    # 5: a session's authentication methods (a JSON array); credentials.
    """
    ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE credentials (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE INDEX credentials_user ON credentials(user_id, kind);
    """,
    # 6: the audit log (no foreign key: a deleted user's records outlive the account, until
    # they expire).
    """
    CREATE TABLE audit (
        id TEXT PRIMARY KEY,
        at REAL NOT NULL,
        expires_at REAL NOT NULL,
        event TEXT NOT NULL,
        user_id TEXT,
        actor_id TEXT,
        session_id TEXT,
        service TEXT,
        code TEXT,
        ip TEXT,
        user_agent TEXT,
        detail TEXT
    );
    CREATE INDEX audit_user ON audit(user_id, id);
    CREATE INDEX audit_event ON audit(event, id);
    CREATE INDEX audit_expires ON audit(expires_at);
    """,
    # 7: the dashboard counts events by time.
    "CREATE INDEX audit_event_at ON audit(event, at);",
)

#: The tables `prune_expired` deletes expired rows from, each with the key that names a row.
_PRUNED = (
    ("sessions", "rowid"),
    ("tokens", "rowid"),
    ("counters", "key, window_start"),
    ("audit", "rowid"),
)

#: The file identity of an in-memory database, which has no file to lose.
_IN_MEMORY = (-1, -1)
#: What SQLite keeps beside a database in WAL mode, named after its path.
_JOURNALS = ("-wal", "-shm")

_USER_COLUMNS = "id, username, deactivated, extra, created_at, updated_at"
#: The same, for queries that join `users u` to another table.
_U_COLUMNS = ", ".join("u." + column for column in _USER_COLUMNS.split(", "))
_SESSION_COLUMNS = (
    "id, user_id, valid, created_at, updated_at, last_used_at, expires_at, refresh_hash, "
    "previous_hash, rotated_at, ip, user_agent, impersonator_id, amr"
)
_CREDENTIAL_COLUMNS = "id, user_id, kind, data, created_at, updated_at, version"
_AUDIT_COLUMNS = (
    "id, at, expires_at, event, user_id, actor_id, session_id, service, code, ip, user_agent, "
    "detail"
)


def _identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path`; None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _session(row: tuple[Any, ...]) -> StoredSession:
    return StoredSession(
        id=row[0],
        user_id=row[1],
        valid=bool(row[2]),
        created_at=_dt(row[3]),
        updated_at=_dt(row[4]),
        last_used_at=_dt(row[5]),
        expires_at=_dt(row[6]),
        refresh_hash=row[7],
        previous_hash=row[8],
        rotated_at=None if row[9] is None else _dt(row[9]),
        ip=row[10],
        user_agent=row[11],
        impersonator_id=row[12],
        amr=() if row[13] == "[]" else tuple(json.loads(row[13])),
    )


def _credential(row: tuple[Any, ...]) -> Credential:
    return Credential(
        id=row[0],
        user_id=row[1],
        kind=row[2],
        data=json.loads(row[3]),
        created_at=_dt(row[4]),
        updated_at=_dt(row[5]),
        version=row[6],
    )


def _audit(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        at=_dt(row[1]),
        expires_at=_dt(row[2]),
        event=row[3],
        user_id=row[4],
        actor_id=row[5],
        session_id=row[6],
        service=row[7],
        code=row[8],
        ip=row[9],
        user_agent=row[10],
        detail=row[11],
    )


class SQLiteStore:
    """Store on a SQLite file (created on first use, migrated on open). `read_cache_size`
    bounds the rows of user and session point reads kept while the file is unchanged
    (0 turns it off); any write, by anyone, empties it. `prune_batch_size` bounds the rows
    one step of `prune_expired` deletes.

    Every write first checks that the file at `path` is still the one open; reads check at
    most once per `file_check_interval`, so a cached read stays a few microseconds. A file
    that is gone makes every call `StoreUnavailable` (never a new, empty database); a file
    that is back, or another one put in its place, is opened (and migrated) instead.

    Raises:
        StoreUnavailable: the file cannot be opened, is locked past the busy timeout, or is
            no longer at `path`.
        ConfigurationError: a negative `file_check_interval`, a `prune_batch_size` below 1.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        read_cache_size: int = 4096,
        file_check_interval: timedelta = timedelta(milliseconds=100),
        prune_batch_size: int = 1000,
    ) -> None:
        if file_check_interval < timedelta(0):
            raise ConfigurationError("file_check_interval must not be negative")
        if prune_batch_size < 1:
            raise ConfigurationError("prune_batch_size must be at least 1")
        self._prune_batch = prune_batch_size
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._cache_size = max(0, read_cache_size)
        self._cache: dict[tuple[str, str], Any] = {}
        self._cache_stamp: tuple[int, int] = (-1, -1)
        #: Where to look for the file even if the process changes directory (a str: stat is
        #: faster on one); None for an in-memory database, which has no file to lose.
        self._file_path = None if str(path) == ":memory:" else str(self.path.absolute())
        self._check_every = file_check_interval.total_seconds()
        self._next_check = _monotonic() + self._check_every
        #: (st_dev, st_ino) of the file the connection has open; None while it has none
        #: (the file is gone, or the store is closed).
        self._file_id: tuple[int, int] | None = None
        #: The WAL and shared-memory files the connection has open, with their identities.
        self._journals: list[tuple[str, tuple[int, int] | None]] = []
        self._closed = False
        self._db: sqlite3.Connection
        self._stamp_cursor: sqlite3.Cursor
        self._open(create=True)

    async def setup(self) -> None:
        """Nothing to do: migrations run when the file is opened."""

    # -- plumbing ---------------------------------------------------------------------------

    def _open(self, *, create: bool) -> None:
        """Connect, set the pragmas, migrate, and note which file this is. Only the first open
        may create the file: one that vanished later is an outage, not a fresh start.

        Raises:
            StoreUnavailable.
        """
        target, uri = str(self.path), False
        if not create and self._file_path is not None:
            target, uri = Path(self._file_path).as_uri() + "?mode=rw", True
        try:
            self._db = sqlite3.connect(
                target,
                uri=uri,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            # One cursor for the stamp every cached read takes: a quarter less than a new one.
            self._stamp_cursor = self._db.cursor()
            self._migrate()
            if self._file_path is None:
                self._file_id = _IN_MEMORY
            else:
                self._file_id = _identity(self._file_path)
                # Open as long as this connection is (SQLite removes them with the last one).
                self._journals = [
                    (self._file_path + s, _identity(self._file_path + s)) for s in _JOURNALS
                ]
        except (sqlite3.Error, OSError) as exc:
            self._db.close()
            raise StoreUnavailable() from exc

    def _check_file(self) -> None:
        """Fail closed while the open file is no longer the one at `path`, and reopen once one
        is there.

        Raises:
            StoreUnavailable.
        """
        self._next_check = _monotonic() + self._check_every
        if self._closed:
            raise StoreUnavailable()
        if self._file_path is None:
            return
        try:
            found = _identity(self._file_path)
        except OSError as exc:
            raise StoreUnavailable() from exc
        if found is not None and found == self._file_id:
            return
        self._drop()
        if found is None:
            raise StoreUnavailable()
        self._open(create=False)
        if self._file_id != found:  # replaced again while it was being opened
            self._file_id = None
            raise StoreUnavailable()

    def _drop(self) -> None:
        """Let go of a file that left `path`. SQLite names a database's WAL and shared-memory
        index after the path, and on closing a moved file neither checkpoints nor removes
        them: whatever file is put at the path next (a restored backup, this store's reopen
        included) would be read through the old file's journal. So the `-wal` and `-shm` this
        connection opened are unlinked first, if they are still the ones at the path (not a
        fresh pair another connection made for the new file); then the connection checkpoints
        what it can into its file, through the handles it holds, and closes."""
        self._file_id = None
        self._cache.clear()
        self._cache_stamp = (-1, -1)
        for name, opened in self._journals:
            with suppress(OSError):  # gone already
                if opened is not None and _identity(name) == opened:
                    os.unlink(name)
        self._journals = []
        with suppress(sqlite3.Error):  # closed already, or busy: it only helps the old file
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._db.close()

    def _migrate(self) -> None:
        with self._transaction() as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            for number, step in enumerate(_MIGRATIONS[version:], start=version + 1):
                if callable(step):
                    step(db)
                else:
                    for statement in step.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version = {number:d}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails halfway
        on a lock upgrade; any error rolls back, so no half-written record remains."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _run(self, fn: Callable[[], _T], *, write: bool = False) -> _T:
        """Run `fn` (which reads `self._db` when called, so a reopened file is used) on the
        file at `path`; `write` when it may write.

        The file is checked before every write, so nothing is written to a file nobody will
        read again; before a read at most once per interval (a stat would add half to a
        cached read).
        """
        if write or _monotonic() >= self._next_check:
            self._check_file()
        elif self._file_id is None:
            raise StoreUnavailable()
        try:
            return fn()
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreUnavailable() from exc

    def _cached(self, key: tuple[str, str], read: Callable[[], _T]) -> _T:
        """A point read, answered from memory while the database is unchanged.

        The stamp is SQLite's `data_version` (moves when another connection commits: a CLI
        revoke, a second worker) and this connection's `total_changes` (moves on every row we
        write, rolled back or not), so a revocation still holds on the very next request.
        Only committed state is cached: never inside a transaction. What is cached is
        immutable (frozen records; a user's `extra` is handed out as a fresh copy).
        """
        if self._cache_size == 0 or self._db.in_transaction:
            return read()
        (version,) = self._stamp_cursor.execute("PRAGMA data_version").fetchone()
        stamp = (version, self._db.total_changes)
        if stamp != self._cache_stamp:
            self._cache.clear()
            self._cache_stamp = stamp
        try:
            return self._cache[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = read()
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = value
        return value

    def _narrow_write(self, evict: tuple[str, str] | None, write: Callable[[], _T]) -> _T:
        """A write known to touch at most the cached entry `evict` (one session row, or a rate
        counter: no trigger or cascade reaches further). It empties only that entry, so a
        refresh or logout leaves every cached user and other session in place."""

        def narrow() -> _T:
            before = self._db.total_changes
            result = write()
            if self._cache_stamp[1] == before:
                self._cache_stamp = (self._cache_stamp[0], self._db.total_changes)
            return result

        result = self._run(narrow, write=True)
        if evict is not None:
            self._cache.pop(evict, None)
        return result

    def _user(self, row: tuple[Any, ...] | None) -> User | None:
        if row is None:
            return None
        user_id, username, deactivated, extra, created_at, updated_at = row
        emails = tuple(
            Email(address, bool(verified))
            for address, verified in self._db.execute(
                "SELECT address, verified FROM emails WHERE user_id = ? ORDER BY position",
                (user_id,),
            )
        )
        return User(
            id=user_id,
            username=username,
            emails=emails,
            deactivated=bool(deactivated),
            created_at=_dt(created_at),
            updated_at=_dt(updated_at),
            extra=json.loads(extra),
        )

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
        user_id: str | None = None,
        created_at: datetime | None = None,
    ) -> User:
        kept_id, user_id = user_id, new_user_id() if user_id is None else user_id
        created = now if created_at is None else created_at

        def insert() -> None:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO users (id, username, username_canonical, extra, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        user_id,
                        username,
                        canonical_username(username) if username is not None else None,
                        json.dumps(dict(extra)),
                        _ts(created),
                        _ts(now),
                    ),
                )
                db.executemany(
                    "INSERT INTO emails (address_canonical, address, user_id, verified, position)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (canonical_email(e.address), e.address, user_id, int(e.verified), i)
                        for i, e in enumerate(emails)
                    ],
                )
                db.executemany(
                    "INSERT INTO user_services (user_id, service, data) VALUES (?, ?, ?)",
                    [(user_id, name, json.dumps(dict(data))) for name, data in services.items()],
                )
                db.executemany(
                    "INSERT INTO identities (provider, subject, user_id) VALUES (?, ?, ?)",
                    [(provider, subject, user_id) for provider, subject in identities],
                )

        try:
            self._run(insert, write=True)
        except sqlite3.IntegrityError as exc:
            if kept_id is not None and await self.find_user_by_id(kept_id) is not None:
                raise UserAlreadyExists() from exc
            # "UNIQUE constraint failed: emails.address_canonical": columns, never values.
            raise unique_conflict(str(exc)) from exc
        user = await self.find_user_by_id(user_id)
        assert user is not None
        return user

    async def find_user_by_id(self, user_id: str) -> User | None:
        sql = f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?"  # noqa: S608

        def read() -> tuple[User, str] | None:
            row = self._db.execute(sql, (user_id,)).fetchone()
            user = self._user(row)
            return None if user is None else (user, row[3])

        found = self._run(lambda: self._cached(("user", user_id), read))
        if found is None:
            return None
        user, extra = found
        # The cached User is shared: its `extra` must not be, or one caller's edit of a
        # nested value would show in every later read.
        return user if extra == "{}" else replace(user, extra=json.loads(extra))

    async def find_user_by_username(self, username: str) -> User | None:
        sql = f"SELECT {_USER_COLUMNS} FROM users WHERE username_canonical = ?"  # noqa: S608
        key = canonical_username(username)
        return self._run(lambda: self._user(self._db.execute(sql, (key,)).fetchone()))

    async def find_user_by_email(self, address: str) -> User | None:
        sql = (
            f"SELECT {_U_COLUMNS} FROM emails e "  # noqa: S608 (our columns)
            "JOIN users u ON u.id = e.user_id WHERE e.address_canonical = ?"
        )
        key = canonical_email(address)
        return self._run(lambda: self._user(self._db.execute(sql, (key,)).fetchone()))

    async def find_user_by_identity(self, provider: str, subject: str) -> User | None:
        sql = (
            f"SELECT {_U_COLUMNS} FROM identities i "  # noqa: S608 (our columns)
            "JOIN users u ON u.id = i.user_id WHERE i.provider = ? AND i.subject = ?"
        )
        return self._run(lambda: self._user(self._db.execute(sql, (provider, subject)).fetchone()))

    async def list_user_identities(self, user_id: str) -> list[tuple[str, str]]:
        sql = "SELECT provider, subject FROM identities WHERE user_id = ? ORDER BY 1, 2"
        rows = self._run(lambda: self._db.execute(sql, (user_id,)).fetchall())
        return [(provider, subject) for provider, subject in rows]

    async def add_identity(
        self, user_id: str, provider: str, subject: str, *, now: datetime
    ) -> bool:
        def add() -> bool:
            with self._transaction() as db:
                if db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                    return False
                db.execute(
                    "INSERT INTO identities (provider, subject, user_id) VALUES (?, ?, ?)",
                    (provider, subject, user_id),
                )
                return True

        try:
            return self._run(add, write=True)
        except sqlite3.IntegrityError as exc:
            raise IdentityAlreadyLinked() from exc

    async def set_user_deactivated(self, user_id: str, deactivated: bool, *, now: datetime) -> bool:
        sql = "UPDATE users SET deactivated = ?, updated_at = ? WHERE id = ?"
        args = (int(deactivated), _ts(now), user_id)
        return self._run(lambda: self._db.execute(sql, args).rowcount == 1, write=True)

    async def update_user(
        self,
        user_id: str,
        *,
        now: datetime,
        username: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> User | None:
        sets: list[str] = ["updated_at = ?"]
        args: list[Any] = [_ts(now)]
        if username is not None:
            sets += ["username = ?", "username_canonical = ?"]
            args += [username, canonical_username(username)]
        if extra is not None:
            sets.append("extra = ?")
            args.append(json.dumps(dict(extra)))
        sql = f"UPDATE users SET {', '.join(sets)} WHERE id = ?"  # noqa: S608 (our columns)
        try:
            found = self._run(lambda: self._db.execute(sql, (*args, user_id)).rowcount, write=True)
        except sqlite3.IntegrityError as exc:
            raise UsernameAlreadyExists() from exc
        return await self.find_user_by_id(user_id) if found else None

    async def list_users(
        self, *, search: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[User]:
        sql = f"SELECT {_U_COLUMNS} FROM users u"  # noqa: S608 (our columns)
        args: list[Any] = []
        if search:
            sql += (
                " WHERE (u.username_canonical >= ? AND u.username_canonical < ?) OR EXISTS ("
                "SELECT 1 FROM emails e WHERE e.user_id = u.id"
                " AND e.address_canonical >= ? AND e.address_canonical < ?)"
            )
            name, mail = search_ranges(search)
            args += [*name, *mail]
        sql += " ORDER BY u.created_at, u.id LIMIT ? OFFSET ?"
        args += [max(0, limit), max(0, offset)]

        def fetch() -> list[User]:
            rows = self._db.execute(sql, args).fetchall()
            return [user for row in rows if (user := self._user(row)) is not None]

        return self._run(fetch)

    async def delete_user(self, user_id: str) -> bool:
        # Emails, service data, identities, credentials, sessions and tokens go with the user
        # (ON DELETE CASCADE).
        sql = "DELETE FROM users WHERE id = ?"
        return self._run(lambda: self._db.execute(sql, (user_id,)).rowcount == 1, write=True)

    async def get_service_data(self, user_id: str, service: str) -> Mapping[str, Any] | None:
        sql = "SELECT data FROM user_services WHERE user_id = ? AND service = ?"
        row = self._run(lambda: self._db.execute(sql, (user_id, service)).fetchone())
        return None if row is None else dict(json.loads(row[0]))

    async def set_service_data(
        self, user_id: str, service: str, data: Mapping[str, Any], *, now: datetime
    ) -> bool:
        sql = (
            "INSERT INTO user_services (user_id, service, data) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id, service) DO UPDATE SET data = excluded.data"
        )
        return self._user_write(user_id, now, sql, (user_id, service, json.dumps(dict(data))))

    def _user_write(self, user_id: str, now: datetime, sql: str, args: tuple[Any, ...]) -> bool:
        """In one transaction: move the user's `updated_at`, then, if there is such a user, run
        `sql` (a write to one of its records). Returns whether the user exists."""

        def write() -> bool:
            with self._transaction() as db:
                found = db.execute(
                    "UPDATE users SET updated_at = ? WHERE id = ?", (_ts(now), user_id)
                ).rowcount
                if found:
                    db.execute(sql, args)
                return found == 1

        return self._run(write, write=True)

    # -- emails -----------------------------------------------------------------------------

    async def add_email(self, user_id: str, email: Email, *, now: datetime) -> bool:
        sql = (
            "INSERT INTO emails (address_canonical, address, user_id, verified, position) "
            "VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(position), -1) + 1 "
            "FROM emails WHERE user_id = ?))"
        )
        canonical = canonical_email(email.address)
        args = (canonical, email.address, user_id, int(email.verified), user_id)
        try:
            return self._user_write(user_id, now, sql, args)
        except sqlite3.IntegrityError as exc:
            raise EmailAlreadyExists() from exc

    async def remove_email(self, user_id: str, address: str, *, now: datetime) -> bool:
        return self._email_update("DELETE FROM emails", user_id, address, now)

    async def set_email_verified(self, user_id: str, address: str, *, now: datetime) -> bool:
        return self._email_update("UPDATE emails SET verified = 1", user_id, address, now)

    def _email_update(self, sql: str, user_id: str, address: str, now: datetime) -> bool:
        """`sql` on the user's rows of `address`: the one holding its canonical form and any
        the migration demoted (`_common`), so the user can still remove or verify those."""
        sql += (
            " WHERE user_id = ? AND (address_canonical = ?"
            " OR (address_canonical >= ? AND address_canonical < ?))"
        )
        canonical = canonical_email(address)
        args = (user_id, canonical, *demoted_range(canonical))

        def update() -> bool:
            with self._transaction() as db:
                changed = db.execute(sql, args).rowcount
                if changed:
                    db.execute("UPDATE users SET updated_at = ? WHERE id = ?", (_ts(now), user_id))
                return changed > 0

        return self._run(update, write=True)

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: StoredSession) -> None:
        s = session
        row = (
            s.id,
            s.user_id,
            int(s.valid),
            _ts(s.created_at),
            _ts(s.updated_at),
            _ts(s.last_used_at),
            _ts(s.expires_at),
            s.refresh_hash,
            s.previous_hash,
            None if s.rotated_at is None else _ts(s.rotated_at),
            s.ip,
            s.user_agent,
            s.impersonator_id,
            json.dumps(list(s.amr)),
        )
        marks = ", ".join("?" * len(row))
        sql = f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ({marks})"  # noqa: S608
        self._narrow_write(("session", s.id), lambda: self._db.execute(sql, row))

    async def find_session(self, session_id: str) -> StoredSession | None:
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?"  # noqa: S608

        def read() -> StoredSession | None:
            row = self._db.execute(sql, (session_id,)).fetchone()
            return None if row is None else _session(row)

        return self._run(lambda: self._cached(("session", session_id), read))

    async def find_session_user(self, session_id: str) -> tuple[StoredSession, User | None] | None:
        """Two cached point reads: one statement would not be faster in process."""
        session = await self.find_session(session_id)
        if session is None:
            return None
        return session, await self.find_user_by_id(session.user_id)

    async def list_user_sessions(self, user_id: str) -> list[StoredSession]:
        sql = (
            f"SELECT {_SESSION_COLUMNS} FROM sessions "  # noqa: S608
            "WHERE user_id = ? AND valid = 1 ORDER BY created_at DESC"
        )
        rows = self._run(lambda: self._db.execute(sql, (user_id,)).fetchall())
        return [_session(row) for row in rows]

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
        sql = (
            "UPDATE sessions SET refresh_hash = ?, previous_hash = refresh_hash, rotated_at = ?, "
            "last_used_at = ?, updated_at = ?, ip = ?, user_agent = ? "
            "WHERE id = ? AND refresh_hash = ? AND valid = 1"
        )
        t = _ts(now)
        values = (new_hash, t, t, t, ip, user_agent, session_id, expected_hash)
        return self._session_write(session_id, sql, values)

    async def touch_session(self, session_id: str, *, now: datetime) -> bool:
        sql = "UPDATE sessions SET last_used_at = ? WHERE id = ? AND valid = 1"
        return self._session_write(session_id, sql, (_ts(now), session_id))

    async def invalidate_session(self, session_id: str, *, now: datetime) -> bool:
        sql = "UPDATE sessions SET valid = 0, updated_at = ? WHERE id = ? AND valid = 1"
        return self._session_write(session_id, sql, (_ts(now), session_id))

    def _session_write(self, session_id: str, sql: str, args: tuple[Any, ...]) -> bool:
        """One conditional UPDATE of one session row (the compare-and-set is its WHERE).
        Returns whether it changed the row."""
        return self._narrow_write(
            ("session", session_id), lambda: self._db.execute(sql, args).rowcount == 1
        )

    async def invalidate_user_sessions(
        self, user_id: str, *, now: datetime, except_ids: Sequence[str] = ()
    ) -> int:
        keep = ", ".join("?" * len(except_ids))
        sql = "UPDATE sessions SET valid = 0, updated_at = ? WHERE user_id = ? AND valid = 1"
        if except_ids:
            sql += f" AND id NOT IN ({keep})"
        args = (_ts(now), user_id, *except_ids)
        return self._run(lambda: self._db.execute(sql, args).rowcount, write=True)

    async def count_active_sessions(self, *, now: datetime) -> int:
        sql = "SELECT count(*) FROM sessions WHERE expires_at > ? AND valid = 1"
        return int(self._run(lambda: self._db.execute(sql, (_ts(now),)).fetchone()[0]))

    # -- credentials ------------------------------------------------------------------------
    #
    # Narrow writes: a credential row is no cached record, and no cascade goes from it to one.

    async def create_credential(self, credential: Credential) -> bool:
        c = credential
        row = (
            c.id,
            c.user_id,
            c.kind,
            json.dumps(dict(c.data)),
            _ts(c.created_at),
            _ts(c.updated_at),
            int(c.version),
        )
        marks = ", ".join("?" * len(row))
        sql = f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) VALUES ({marks})"  # noqa: S608

        def add() -> bool:
            with self._transaction() as db:
                if db.execute("SELECT 1 FROM users WHERE id = ?", (c.user_id,)).fetchone() is None:
                    return False
                db.execute(sql, row)
                return True

        try:
            return self._narrow_write(None, add)
        except sqlite3.IntegrityError as exc:  # the primary key: the user exists
            raise CredentialAlreadyExists() from exc

    async def find_credential(self, credential_id: str) -> Credential | None:
        sql = f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE id = ?"  # noqa: S608
        row = self._run(lambda: self._db.execute(sql, (credential_id,)).fetchone())
        return None if row is None else _credential(row)

    async def list_user_credentials(
        self, user_id: str, kind: str | None = None
    ) -> list[Credential]:
        sql = f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE user_id = ?"  # noqa: S608
        args: tuple[str, ...] = (user_id,)
        if kind is not None:
            sql += " AND kind = ?"
            args += (kind,)
        sql += " ORDER BY created_at, id"
        rows = self._run(lambda: self._db.execute(sql, args).fetchall())
        return [_credential(row) for row in rows]

    async def update_credential(
        self, credential_id: str, *, version: int, data: Mapping[str, Any], now: datetime
    ) -> bool:
        sql = (
            "UPDATE credentials SET data = ?, version = version + 1, updated_at = ? "
            "WHERE id = ? AND version = ?"
        )
        args = (json.dumps(dict(data)), _ts(now), credential_id, int(version))
        return self._narrow_write(None, lambda: self._db.execute(sql, args).rowcount == 1)

    async def delete_credential(self, credential_id: str) -> bool:
        sql = "DELETE FROM credentials WHERE id = ?"
        return self._narrow_write(
            None, lambda: self._db.execute(sql, (credential_id,)).rowcount == 1
        )

    # -- the audit log --------------------------------------------------------------------------

    async def add_audit(self, record: AuditRecord) -> None:
        r = record
        row = (
            r.id,
            _ts(r.at),
            _ts(r.expires_at),
            r.event,
            r.user_id,
            r.actor_id,
            r.session_id,
            r.service,
            r.code,
            r.ip,
            r.user_agent,
            r.detail,
        )
        sql = f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES ({', '.join('?' * len(row))})"  # noqa: S608
        self._narrow_write(None, lambda: self._db.execute(sql, row))

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        where: list[str] = []
        args: list[str | float | int] = []
        if query.user_id is not None:
            where.append("user_id = ?")
            args.append(query.user_id)
        if query.events:
            where.append(f"event IN ({', '.join('?' * len(query.events))})")
            args.extend(query.events)
        if query.since is not None:
            where.append("at >= ?")
            args.append(_ts(query.since))
        if query.until is not None:
            where.append("at < ?")
            args.append(_ts(query.until))
        if query.before is not None:
            where.append("id < ?")
            args.append(query.before)
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit"  # noqa: S608 (our column names)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(query.limit)
        rows = self._run(lambda: self._db.execute(sql, args).fetchall())
        return [_audit(row) for row in rows]

    async def count_audit(
        self, events: Sequence[str], *, since: datetime, step: timedelta, steps: int
    ) -> dict[str, list[int]]:
        counts = {event: [0] * steps for event in events}
        if not events or steps <= 0:
            return counts
        start, width = _ts(since), step.total_seconds()
        sql = (
            "SELECT event, CAST((at - ?) / ? AS INTEGER), count(*) FROM audit"  # noqa: S608
            f" WHERE event IN ({', '.join('?' * len(events))}) AND at >= ? AND at < ?"
            " GROUP BY 1, 2"
        )
        args = (start, width, *events, start, start + width * steps)
        for event, window, count in self._run(lambda: self._db.execute(sql, args).fetchall()):
            counts[event][min(window, steps - 1)] += count
        return counts

    async def prune_expired(self, *, now: datetime) -> int:
        """In batches of `prune_batch_size` rows, each one statement (one transaction), with
        the event loop free between them: the loop and the write lock are held for one batch
        at a time, never for the whole of millions of expired rows."""
        args = (_ts(now), self._prune_batch)

        def delete(sql: str) -> int:
            return int(self._db.execute(sql, args).rowcount)

        total = 0
        for table, key in _PRUNED:
            sql = (
                f"DELETE FROM {table} WHERE ({key}) IN "  # noqa: S608 (our names)
                f"(SELECT {key} FROM {table} WHERE expires_at < ? LIMIT ?)"
            )
            while True:
                deleted = self._run(partial(delete, sql), write=True)
                total += deleted
                if deleted < self._prune_batch:
                    break
                await asyncio.sleep(0)  # more to come: let what waited meanwhile run first
        return total

    # -- one-time tokens and counters -------------------------------------------------------

    async def create_token(self, token: OneTimeToken) -> None:
        t = token
        sql = (
            "INSERT INTO tokens (token_hash, kind, user_id, email, data, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        args = (
            t.token_hash,
            t.kind,
            t.user_id,
            t.email,
            json.dumps(dict(t.data)),
            _ts(t.created_at),
            _ts(t.expires_at),
        )
        self._run(lambda: self._db.execute(sql, args), write=True)

    async def consume_token(self, token_hash: bytes, kind: str) -> OneTimeToken | None:
        sql = (
            "DELETE FROM tokens WHERE token_hash = ? AND kind = ? "
            "RETURNING token_hash, kind, user_id, email, created_at, expires_at, data"
        )

        def consume() -> tuple[Any, ...] | None:
            with self._transaction() as db:
                row: tuple[Any, ...] | None = db.execute(sql, (token_hash, kind)).fetchone()
                return row

        row = self._run(consume, write=True)
        if row is None:
            return None
        return OneTimeToken(
            token_hash=row[0],
            kind=row[1],
            user_id=row[2],
            email=row[3],
            created_at=_dt(row[4]),
            expires_at=_dt(row[5]),
            data=json.loads(row[6]),
        )

    async def delete_user_tokens(self, user_id: str, kinds: Sequence[str]) -> int:
        marks = ", ".join("?" * len(kinds))
        sql = f"DELETE FROM tokens WHERE user_id = ? AND kind IN ({marks})"  # noqa: S608
        return self._run(lambda: self._db.execute(sql, (user_id, *kinds)).rowcount, write=True)

    async def hit_counter(self, key: str, *, window_start: datetime, expires_at: datetime) -> int:
        sql = (
            "INSERT INTO counters (key, window_start, count, expires_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (key, window_start) DO UPDATE SET count = count + 1 RETURNING count"
        )
        args = (key, _ts(window_start), _ts(expires_at))

        def hit() -> int:
            with self._transaction() as db:
                return int(db.execute(sql, args).fetchone()[0])

        return self._narrow_write(None, hit)

    async def get_counter(self, key: str, *, window_start: datetime) -> int:
        sql = "SELECT count FROM counters WHERE key = ? AND window_start = ?"
        row = self._run(lambda: self._db.execute(sql, (key, _ts(window_start))).fetchone())
        return 0 if row is None else int(row[0])

    async def clear_counter(self, key: str) -> None:
        sql = "DELETE FROM counters WHERE key = ?"
        self._narrow_write(None, lambda: self._db.execute(sql, (key,)))

    async def close(self) -> None:
        self._closed = True
        self._file_id = None
        self._cache.clear()
        self._db.close()
