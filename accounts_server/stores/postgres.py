"""The PostgreSQL store: the production SQL database, on psycopg 3 with its async pool.

Every critical transition is one statement whose `WHERE` is the compare-and-set (rotation,
revocation) or one `DELETE ... RETURNING` (token consumption); uniqueness is the database's:
named constraints on the canonical username, the canonical email, (provider, subject) and
the token hash, mapped to errors by constraint name, never by message text. Values reach SQL
only as parameters; the few names composed into statements are our own.

The schema lives in its own PostgreSQL schema (`accounts` by default), so an application's
own `users` table in the same database is left alone; migrations run at startup in one
transaction under an advisory lock, so two processes starting at once apply each once.

Every call is bounded: connecting (2 s), waiting for a pooled connection (2 s), each
statement (5 s, `statement_timeout`), and all of a request's calls together
(`store_deadline`). Running out of any of them, a refused connection, or a server that went
away, is `StoreUnavailable` (503); the pool reconnects on its own when the server is back.
"""

# Statements are composed only of this module's own names (columns, tables, the user SELECT);
# every value is a parameter, so S608's string-built SQL is never user input here.
# ruff: noqa: S608
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql as pg_sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "PostgresStore needs the [postgres] extra: pip install 'accounts-server[postgres]'"
    ) from exc

from ..deadline import store_deadline_at
from ..errors import (
    AccountsError,
    ConfigurationError,
    CredentialAlreadyExists,
    EmailAlreadyExists,
    IdentityAlreadyLinked,
    InvalidRequest,
    StoreUnavailable,
    UserAlreadyExists,
    UsernameAlreadyExists,
)
from ..types import Email, User
from ._common import demoted_range, search_ranges
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

__all__ = ["PostgresStore"]

logger = logging.getLogger("accounts_server.stores")

_T = TypeVar("_T")
Connection = psycopg.AsyncConnection[Any]
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: Which error a unique constraint's violation is: by the constraint's name.
_UNIQUE: dict[str, type[AccountsError]] = {
    "users_pkey": UserAlreadyExists,
    "users_username_unique": UsernameAlreadyExists,
    "emails_pkey": EmailAlreadyExists,
    "identities_pkey": IdentityAlreadyLinked,
    "credentials_pkey": CredentialAlreadyExists,
}

#: The `CANONICAL_EMAIL_VERSION` the first migration's canonical forms follow. A later
#: change of `canonical_email` needs a migration that recomputes them (SQLite's
#: `_recanonicalise_emails`, with `_common`'s rules); a test fails until it has one.
CANONICAL_EMAIL_BASELINE = 2

#: Schema migrations, applied in order; `schema_version` records how many ran. Canonical
#: keys and ids sort by code point (`COLLATE "C"`), as the prefix searches and the audit
#: log's id cursor need, whatever the database's own collation.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id text COLLATE "C" CONSTRAINT users_pkey PRIMARY KEY,
        username text,
        username_canonical text COLLATE "C" CONSTRAINT users_username_unique UNIQUE,
        deactivated boolean NOT NULL DEFAULT false,
        extra text NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX users_created ON users (created_at, id);
    CREATE TABLE emails (
        address_canonical text COLLATE "C" CONSTRAINT emails_pkey PRIMARY KEY,
        address text NOT NULL,
        user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        verified boolean NOT NULL DEFAULT false,
        position integer NOT NULL
    );
    CREATE INDEX emails_user ON emails (user_id, position);
    CREATE TABLE user_services (
        user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        service text NOT NULL,
        data text NOT NULL,
        PRIMARY KEY (user_id, service)
    );
    CREATE TABLE identities (
        provider text COLLATE "C" NOT NULL,
        subject text COLLATE "C" NOT NULL,
        user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        CONSTRAINT identities_pkey PRIMARY KEY (provider, subject)
    );
    CREATE INDEX identities_user ON identities (user_id);
    CREATE TABLE sessions (
        id text COLLATE "C" PRIMARY KEY,
        user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        valid boolean NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        last_used_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        refresh_hash bytea NOT NULL,
        previous_hash bytea,
        rotated_at timestamptz,
        ip text,
        user_agent text,
        impersonator_id text,
        amr text[] NOT NULL DEFAULT '{}'
    );
    CREATE INDEX sessions_user ON sessions (user_id, created_at DESC);
    CREATE INDEX sessions_expiry ON sessions (expires_at);
    CREATE TABLE tokens (
        token_hash bytea PRIMARY KEY,
        kind text NOT NULL,
        user_id text COLLATE "C" REFERENCES users (id) ON DELETE CASCADE,
        email text,
        data text NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE INDEX tokens_user ON tokens (user_id, kind);
    CREATE INDEX tokens_expiry ON tokens (expires_at);
    CREATE TABLE counters (
        key text NOT NULL,
        window_start timestamptz NOT NULL,
        count bigint NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (key, window_start)
    );
    CREATE INDEX counters_expiry ON counters (expires_at);
    CREATE TABLE credentials (
        id text COLLATE "C" CONSTRAINT credentials_pkey PRIMARY KEY,
        user_id text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        kind text NOT NULL,
        data text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        version integer NOT NULL
    );
    CREATE INDEX credentials_user ON credentials (user_id, kind);
    CREATE TABLE audit (
        id text COLLATE "C" PRIMARY KEY,
        at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        event text NOT NULL,
        user_id text COLLATE "C",
        actor_id text,
        session_id text,
        service text,
        code text,
        ip text,
        user_agent text,
        detail text
    );
    CREATE INDEX audit_user ON audit (user_id, id);
    CREATE INDEX audit_event ON audit (event, id);
    CREATE INDEX audit_event_at ON audit (event, at);
    CREATE INDEX audit_expires ON audit (expires_at);
    """,
)

#: The tables `prune_expired` deletes expired rows from.
_PRUNED = ("sessions", "tokens", "counters", "audit")

_USER_SELECT = (
    "SELECT u.id, u.username, u.deactivated, u.extra, u.created_at, u.updated_at, "
    "(SELECT json_agg(json_build_array(e.address, e.verified) ORDER BY e.position) "
    "FROM emails e WHERE e.user_id = u.id) FROM users u"
)
_SESSION_COLUMNS = (
    "id, user_id, valid, created_at, updated_at, last_used_at, expires_at, refresh_hash, "
    "previous_hash, rotated_at, ip, user_agent, impersonator_id, amr"
)
_SESSION_USER = (
    "SELECT "
    + ", ".join(f"s.{column.strip()}" for column in _SESSION_COLUMNS.split(","))
    + ", u.id, u.username, u.deactivated, u.extra, u.created_at, u.updated_at, "
    "(SELECT json_agg(json_build_array(e.address, e.verified) ORDER BY e.position) "
    "FROM emails e WHERE e.user_id = u.id) "
    "FROM sessions s LEFT JOIN users u ON u.id = s.user_id WHERE s.id = %s"
)
_CREDENTIAL_COLUMNS = "id, user_id, kind, data, created_at, updated_at, version"
_AUDIT_COLUMNS = (
    "id, at, expires_at, event, user_id, actor_id, session_id, service, code, ip, user_agent, "
    "detail"
)
_TOKEN_COLUMNS = "token_hash, kind, user_id, email, data, created_at, expires_at"  # noqa: S105


def _marks(columns: str) -> str:
    return ", ".join(["%s"] * len(columns.split(",")))


def _user(row: tuple[Any, ...] | None) -> User | None:
    if row is None:
        return None
    user_id, username, deactivated, extra, created_at, updated_at, emails = row
    return User(
        id=user_id,
        username=username,
        emails=tuple(Email(address, bool(verified)) for address, verified in emails or ()),
        deactivated=bool(deactivated),
        created_at=created_at,
        updated_at=updated_at,
        extra=json.loads(extra),
    )


def _session(row: tuple[Any, ...]) -> StoredSession:
    return StoredSession(
        id=row[0],
        user_id=row[1],
        valid=row[2],
        created_at=row[3],
        updated_at=row[4],
        last_used_at=row[5],
        expires_at=row[6],
        refresh_hash=bytes(row[7]),
        previous_hash=None if row[8] is None else bytes(row[8]),
        rotated_at=row[9],
        ip=row[10],
        user_agent=row[11],
        impersonator_id=row[12],
        amr=tuple(row[13]),
    )


def _credential(row: tuple[Any, ...]) -> Credential:
    return Credential(
        id=row[0],
        user_id=row[1],
        kind=row[2],
        data=json.loads(row[3]),
        created_at=row[4],
        updated_at=row[5],
        version=row[6],
    )


def _audit(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        at=row[1],
        expires_at=row[2],
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


class _NothingChanged(Exception):
    """Rolls back a transaction that found nothing to change."""


class _Broken(Exception):
    """A statement failed because its connection broke: safe to try a read again."""

    def __init__(self, error: psycopg.OperationalError) -> None:
        self.error = error


def _unique(exc: pg_errors.UniqueViolation) -> AccountsError:
    """The error a unique violation means, by the constraint the server names."""
    error = _UNIQUE.get(exc.diag.constraint_name or "")
    if error is None:  # a constraint of ours not in the table: a bug, not the user's input
        raise exc
    return error()


class PostgresStore:
    """Store on a PostgreSQL database (`postgresql://...`), in `schema` (created, and migrated,
    on first use). `max_connections` bounds the pool of one process; `connect_timeout`,
    `pool_timeout` and `statement_timeout` bound each call.

    Raises:
        ConfigurationError: a schema name that is not a plain lower-case identifier, a bound
            out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "accounts",
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: timedelta = timedelta(seconds=2),
        pool_timeout: timedelta = timedelta(seconds=2),
        statement_timeout: timedelta = timedelta(seconds=5),
        prune_batch_size: int = 1000,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_"):
            raise ConfigurationError(f"schema {schema!r} is not a plain lower-case identifier")
        if not 1 <= min_connections <= max_connections <= 1000:
            raise ConfigurationError("connections: 1 <= min_connections <= max_connections")
        if prune_batch_size < 1:
            raise ConfigurationError("prune_batch_size must be at least 1")
        for name, bound in (
            ("connect_timeout", connect_timeout),
            ("pool_timeout", pool_timeout),
            ("statement_timeout", statement_timeout),
        ):
            if not timedelta(milliseconds=1) <= bound <= timedelta(minutes=10):
                raise ConfigurationError(f"{name} must be between 1 ms and 10 minutes")
        self.schema = schema
        self._prune_batch = prune_batch_size
        self._statement_timeout = statement_timeout.total_seconds()
        ours = (
            f"-c search_path={schema} -c TimeZone=UTC "
            f"-c statement_timeout={int(self._statement_timeout * 1000)}"
        )
        try:  # the URL's own `options` stay (ours come last, so they win on the same name)
            given = conninfo_to_dict(url).get("options")
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError("the PostgreSQL URL is not a valid connection string") from exc
        options = f"{given} {ours}" if given else ours
        self._pool = AsyncConnectionPool(
            url,
            min_size=min_connections,
            max_size=max_connections,
            timeout=pool_timeout.total_seconds(),
            kwargs={
                "autocommit": True,
                "options": options,
                # libpq takes whole seconds, and treats 1 as 2.
                "connect_timeout": max(2, round(connect_timeout.total_seconds())),
                "application_name": "accounts-server",
            },
            open=False,
            name="accounts-server",
            # Each reconnect attempt gives up after 5 s and the next request starts another:
            # after a long outage the pool's backoff does not grow past the server's return.
            reconnect_timeout=5.0,
        )
        self._opened = False
        self._migrated = False
        self._closed = False
        self._setup_lock = asyncio.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Open the pool and migrate the schema (also done by the first call)."""
        await self._ensure()

    async def _ensure(self) -> None:
        if self._migrated:
            return
        try:
            # Waiting for another caller's setup counts against this call's bound too.
            async with asyncio.timeout_at(self._deadline()):
                await self._setup_lock.acquire()
        except TimeoutError:
            logger.warning("PostgreSQL unavailable: the setup did not finish in time")
            raise StoreUnavailable() from None
        try:
            if self._closed:
                raise StoreUnavailable()
            if not self._opened:
                await self._pool.open(wait=False)
                self._opened = True
            if not self._migrated:
                await self._guarded(self._migrate)
                self._migrated = True
        finally:
            self._setup_lock.release()

    def _deadline(self) -> float:
        """When the current call must be over, on the loop's clock: the request's
        `store_deadline`, and never later than a statement's own bound and a second (a
        frozen server answers neither; without this, a CLI command would wait forever)."""
        own = asyncio.get_running_loop().time() + self._statement_timeout + 1.0
        at = store_deadline_at()
        return own if at is None else min(at, own)

    async def _migrate(self, conn: Connection) -> None:
        """Every migration not yet applied, in one transaction under an advisory lock keyed
        by the schema: of two processes starting at once, the second waits, then finds the
        work done."""
        async with conn.transaction():
            lock = f"accounts-server:{self.schema}"
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            await conn.execute("SET LOCAL statement_timeout = 0")  # a migration may be long
            found = await conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            )
            if await found.fetchone() is None:  # CREATE ... IF NOT EXISTS needs the privilege
                try:
                    await conn.execute(
                        pg_sql.SQL("CREATE SCHEMA {}").format(pg_sql.Identifier(self.schema))
                    )
                except pg_errors.InsufficientPrivilege as exc:
                    raise ConfigurationError(
                        f"no schema {self.schema!r} and no right to create one: create it "
                        "for this role, or grant CREATE on the database"
                    ) from exc
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
            )
            row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
            if row is None:
                await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = 0 if row is None else int(row[0])
            if version > len(_MIGRATIONS):
                raise ConfigurationError(
                    f"the database's schema is version {version}, newer than this "
                    f"accounts-server knows ({len(_MIGRATIONS)}): upgrade accounts-server"
                )
            for number, step in enumerate(_MIGRATIONS[version:], start=version + 1):
                await conn.execute(step)
                await conn.execute("UPDATE schema_version SET version = %s", (number,))

    async def _guarded(
        self, work: Callable[[Connection], Awaitable[_T]], *, read: bool = False
    ) -> _T:
        """`work` on a pooled connection, done by `_deadline()`, with every way the database
        can fail to answer turned into `StoreUnavailable`. A read is tried again on another
        connection when its own turned out broken (the server restarted since it was pooled):
        the pool replaces broken ones, instead of each failing one request."""
        try:
            # Each pooled connection may be one the restart broke: as many tries as it holds.
            attempts = self._pool.max_size + 1 if read else 1
            for attempt in range(1, attempts + 1):
                try:
                    return await self._on_connection(work, self._deadline())
                except _Broken as broken:
                    if attempt == attempts:
                        raise broken.error from None
            raise AssertionError("unreachable")
        except (pg_errors.IntegrityError, AccountsError):
            raise
        except pg_errors.DataError as exc:
            # A value the database cannot hold (a NUL character in text): the caller's
            # input, never an outage.
            raise InvalidRequest("a value holds a character that cannot be stored") from exc
        except (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            PoolTimeout,
            TimeoutError,
            OSError,
        ) as exc:
            summary = str(exc).split("\n", 1)[0][:160]
            if isinstance(exc, TimeoutError):
                summary = "the call's deadline ran out"
            logger.warning("PostgreSQL unavailable: %s: %s", type(exc).__name__, summary)
            raise StoreUnavailable() from exc

    async def _on_connection(self, work: Callable[[Connection], Awaitable[_T]], at: float) -> _T:
        """Past `at`, the connection's socket is closed: psycopg answers a cancelled query by
        asking the server to cancel it and waiting for the answer, which a frozen server never
        gives; with the socket gone, every wait ends at once (and the pool drops it)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(at):
            conn = await self._pool.getconn()
        try:
            task = asyncio.ensure_future(work(conn))
            done, _ = await asyncio.wait({task}, timeout=max(0.0, at - loop.time()))
            if not done:
                conn.pgconn.finish()
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise TimeoutError()
            try:
                return task.result()
            except psycopg.OperationalError as exc:
                # A restarted server's parting words (AdminShutdown) arrive on the first use
                # of each connection it had; then the connection is gone.
                if conn.broken or conn.closed or isinstance(exc, pg_errors.AdminShutdown):
                    raise _Broken(exc) from exc
                raise
        finally:
            await self._pool.putconn(conn)

    async def _run(self, work: Callable[[Connection], Awaitable[_T]], *, read: bool = False) -> _T:
        await self._ensure()
        return await self._guarded(work, read=read)

    async def _one(
        self, sql: str, args: Sequence[Any] = (), *, read: bool = False
    ) -> tuple[Any, ...] | None:
        async def fetch(conn: Connection) -> tuple[Any, ...] | None:
            cursor = await conn.execute(sql, args)
            return await cursor.fetchone()

        return await self._run(fetch, read=read)

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read (every caller's statement is a SELECT)."""

        async def fetch(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, args)
            return await cursor.fetchall()

        return await self._run(fetch, read=True)

    async def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        """The rows one write statement changed."""

        async def write(conn: Connection) -> int:
            cursor = await conn.execute(sql, args)
            return int(cursor.rowcount)

        return await self._run(write)

    @asynccontextmanager
    async def _unique_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except pg_errors.UniqueViolation as exc:
            raise _unique(exc) from exc

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
        new_id = new_user_id() if user_id is None else user_id
        created = now if created_at is None else created_at

        async def insert(conn: Connection) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.execute(
                    "INSERT INTO users (id, username, username_canonical, extra, created_at, "
                    "updated_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    (
                        new_id,
                        username,
                        canonical_username(username) if username is not None else None,
                        json.dumps(dict(extra)),
                        created,
                        now,
                    ),
                )
                if emails:
                    await cursor.executemany(
                        "INSERT INTO emails (address_canonical, address, user_id, verified, "
                        "position) VALUES (%s, %s, %s, %s, %s)",
                        [
                            (canonical_email(e.address), e.address, new_id, e.verified, i)
                            for i, e in enumerate(emails)
                        ],
                    )
                if services:
                    await cursor.executemany(
                        "INSERT INTO user_services (user_id, service, data) VALUES (%s, %s, %s)",
                        [(new_id, name, json.dumps(dict(d))) for name, d in services.items()],
                    )
                if identities:
                    await cursor.executemany(
                        "INSERT INTO identities (provider, subject, user_id) VALUES (%s, %s, %s)",
                        [(provider, subject, new_id) for provider, subject in identities],
                    )

        async with self._unique_errors():
            await self._run(insert)
        user = await self.find_user_by_id(new_id)
        assert user is not None
        return user

    async def find_user_by_id(self, user_id: str) -> User | None:
        return _user(await self._one(f"{_USER_SELECT} WHERE u.id = %s", (user_id,), read=True))

    async def find_user_by_username(self, username: str) -> User | None:
        sql = f"{_USER_SELECT} WHERE u.username_canonical = %s"
        return _user(await self._one(sql, (canonical_username(username),), read=True))

    async def find_user_by_email(self, address: str) -> User | None:
        sql = (
            f"{_USER_SELECT} WHERE u.id = (SELECT user_id FROM emails WHERE address_canonical = %s)"
        )
        return _user(await self._one(sql, (canonical_email(address),), read=True))

    async def find_user_by_identity(self, provider: str, subject: str) -> User | None:
        sql = (
            f"{_USER_SELECT} WHERE u.id = "
            "(SELECT user_id FROM identities WHERE provider = %s AND subject = %s)"
        )
        return _user(await self._one(sql, (provider, subject), read=True))

    async def list_user_identities(self, user_id: str) -> list[tuple[str, str]]:
        sql = "SELECT provider, subject FROM identities WHERE user_id = %s ORDER BY 1, 2"
        return [(provider, subject) for provider, subject in await self._all(sql, (user_id,))]

    async def add_identity(
        self, user_id: str, provider: str, subject: str, *, now: datetime
    ) -> bool:
        """Inserted from the user's row, so a missing user inserts nothing (and one deleted
        meanwhile fails the foreign key): no identity of nobody."""
        sql = (
            "INSERT INTO identities (provider, subject, user_id) "
            "SELECT %s, %s, id FROM users WHERE id = %s"
        )
        try:
            async with self._unique_errors():
                return await self._count(sql, (provider, subject, user_id)) == 1
        except pg_errors.ForeignKeyViolation:
            return False

    async def set_user_deactivated(self, user_id: str, deactivated: bool, *, now: datetime) -> bool:
        sql = "UPDATE users SET deactivated = %s, updated_at = %s WHERE id = %s"
        return await self._count(sql, (deactivated, now, user_id)) == 1

    async def update_user(
        self,
        user_id: str,
        *,
        now: datetime,
        username: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> User | None:
        sets = ["updated_at = %s"]
        args: list[Any] = [now]
        if username is not None:
            sets += ["username = %s", "username_canonical = %s"]
            args += [username, canonical_username(username)]
        if extra is not None:
            sets.append("extra = %s")
            args.append(json.dumps(dict(extra)))
        sql = f"UPDATE users SET {', '.join(sets)} WHERE id = %s"
        async with self._unique_errors():
            found = await self._count(sql, (*args, user_id))
        return await self.find_user_by_id(user_id) if found else None

    async def list_users(
        self, *, search: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[User]:
        sql = _USER_SELECT
        args: list[Any] = []
        if search:
            sql += (
                " WHERE (u.username_canonical >= %s AND u.username_canonical < %s) OR EXISTS ("
                "SELECT 1 FROM emails e WHERE e.user_id = u.id"
                " AND e.address_canonical >= %s AND e.address_canonical < %s)"
            )
            name, mail = search_ranges(search)
            args += [*name, *mail]
        sql += " ORDER BY u.created_at, u.id LIMIT %s OFFSET %s"
        args += [max(0, limit), max(0, offset)]
        return [user for row in await self._all(sql, args) if (user := _user(row)) is not None]

    async def delete_user(self, user_id: str) -> bool:
        # Emails, service data, identities, credentials, sessions and tokens go with the user
        # (ON DELETE CASCADE).
        return await self._count("DELETE FROM users WHERE id = %s", (user_id,)) == 1

    async def get_service_data(self, user_id: str, service: str) -> Mapping[str, Any] | None:
        sql = "SELECT data FROM user_services WHERE user_id = %s AND service = %s"
        row = await self._one(sql, (user_id, service), read=True)
        return None if row is None else dict(json.loads(row[0]))

    async def set_service_data(
        self, user_id: str, service: str, data: Mapping[str, Any], *, now: datetime
    ) -> bool:
        sql = (
            "INSERT INTO user_services (user_id, service, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (user_id, service) DO UPDATE SET data = excluded.data"
        )
        return await self._user_write(user_id, now, sql, (user_id, service, json.dumps(dict(data))))

    async def _user_write(
        self, user_id: str, now: datetime, sql: str, args: tuple[Any, ...]
    ) -> bool:
        """In one transaction: move the user's `updated_at` (which locks the user's row, so
        writes to one user's records run one at a time), then, if there is such a user, run
        `sql`. Returns whether the user exists."""

        async def write(conn: Connection) -> bool:
            async with conn.transaction():
                found = await conn.execute(
                    "UPDATE users SET updated_at = %s WHERE id = %s", (now, user_id)
                )
                if found.rowcount != 1:
                    return False
                await conn.execute(sql, args)
                return True

        return await self._run(write)

    # -- emails -----------------------------------------------------------------------------

    async def add_email(self, user_id: str, email: Email, *, now: datetime) -> bool:
        sql = (
            "INSERT INTO emails (address_canonical, address, user_id, verified, position) "
            "VALUES (%s, %s, %s, %s, (SELECT COALESCE(MAX(position), -1) + 1 "
            "FROM emails WHERE user_id = %s))"
        )
        canonical = canonical_email(email.address)
        args = (canonical, email.address, user_id, email.verified, user_id)
        async with self._unique_errors():
            return await self._user_write(user_id, now, sql, args)

    async def remove_email(self, user_id: str, address: str, *, now: datetime) -> bool:
        return await self._email_update("DELETE FROM emails", user_id, address, now)

    async def set_email_verified(self, user_id: str, address: str, *, now: datetime) -> bool:
        return await self._email_update("UPDATE emails SET verified = true", user_id, address, now)

    async def _email_update(self, sql: str, user_id: str, address: str, now: datetime) -> bool:
        """`sql` on the user's rows of `address`: the one holding its canonical form and any
        a recanonicalisation demoted (`_common`)."""
        sql += (
            " WHERE user_id = %s AND (address_canonical = %s"
            " OR (address_canonical >= %s AND address_canonical < %s))"
        )
        canonical = canonical_email(address)
        args = (user_id, canonical, *demoted_range(canonical))

        async def update(conn: Connection) -> bool:
            # The user's row first, as `_user_write` locks it: two writers to one user's
            # records take the locks in one order, never a deadlock.
            async with conn.transaction():
                await conn.execute("UPDATE users SET updated_at = %s WHERE id = %s", (now, user_id))
                changed = (await conn.execute(sql, args)).rowcount
                if not changed:
                    raise _NothingChanged()
                return True

        try:
            return await self._run(update)
        except _NothingChanged:  # rolled back: `updated_at` moves only with a change
            return False

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: StoredSession) -> None:
        s = session
        row = (
            s.id,
            s.user_id,
            s.valid,
            s.created_at,
            s.updated_at,
            s.last_used_at,
            s.expires_at,
            s.refresh_hash,
            s.previous_hash,
            s.rotated_at,
            s.ip,
            s.user_agent,
            s.impersonator_id,
            list(s.amr),
        )
        sql = f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES ({_marks(_SESSION_COLUMNS)})"
        await self._count(sql, row)

    async def find_session(self, session_id: str) -> StoredSession | None:
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = %s"
        row = await self._one(sql, (session_id,), read=True)
        return None if row is None else _session(row)

    async def find_session_user(self, session_id: str) -> tuple[StoredSession, User | None] | None:
        """One statement: the hot path of every authenticated request is one round trip."""
        row = await self._one(_SESSION_USER, (session_id,), read=True)
        if row is None:
            return None
        width = len(_SESSION_COLUMNS.split(","))
        user = None if row[width] is None else _user(row[width:])
        return _session(row[:width]), user

    async def list_user_sessions(self, user_id: str) -> list[StoredSession]:
        sql = (
            f"SELECT {_SESSION_COLUMNS} FROM sessions "
            "WHERE user_id = %s AND valid ORDER BY created_at DESC"
        )
        return [_session(row) for row in await self._all(sql, (user_id,))]

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
            "UPDATE sessions SET refresh_hash = %s, previous_hash = refresh_hash, "
            "rotated_at = %s, last_used_at = %s, updated_at = %s, ip = %s, user_agent = %s "
            "WHERE id = %s AND refresh_hash = %s AND valid"
        )
        args = (new_hash, now, now, now, ip, user_agent, session_id, expected_hash)
        return await self._count(sql, args) == 1

    async def touch_session(self, session_id: str, *, now: datetime) -> bool:
        sql = "UPDATE sessions SET last_used_at = %s WHERE id = %s AND valid"
        return await self._count(sql, (now, session_id)) == 1

    async def invalidate_session(self, session_id: str, *, now: datetime) -> bool:
        sql = "UPDATE sessions SET valid = false, updated_at = %s WHERE id = %s AND valid"
        return await self._count(sql, (now, session_id)) == 1

    async def invalidate_user_sessions(
        self, user_id: str, *, now: datetime, except_ids: Sequence[str] = ()
    ) -> int:
        sql = (
            "UPDATE sessions SET valid = false, updated_at = %s "
            "WHERE user_id = %s AND valid AND NOT (id = ANY(%s))"
        )
        return await self._count(sql, (now, user_id, list(except_ids)))

    async def count_active_sessions(self, *, now: datetime) -> int:
        row = await self._one(
            "SELECT count(*) FROM sessions WHERE expires_at > %s AND valid", (now,), read=True
        )
        return 0 if row is None else int(row[0])

    # -- credentials ------------------------------------------------------------------------

    async def create_credential(self, credential: Credential) -> bool:
        """Inserted from the user's row, as `add_identity` is."""
        c = credential
        sql = (
            f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) "
            "SELECT %s, id, %s, %s, %s, %s, %s FROM users WHERE id = %s"
        )
        args = (
            c.id,
            c.kind,
            json.dumps(dict(c.data)),
            c.created_at,
            c.updated_at,
            int(c.version),
            c.user_id,
        )
        try:
            async with self._unique_errors():
                return await self._count(sql, args) == 1
        except pg_errors.ForeignKeyViolation:
            return False

    async def find_credential(self, credential_id: str) -> Credential | None:
        sql = f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE id = %s"
        row = await self._one(sql, (credential_id,), read=True)
        return None if row is None else _credential(row)

    async def list_user_credentials(
        self, user_id: str, kind: str | None = None
    ) -> list[Credential]:
        sql = f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE user_id = %s"
        args: tuple[str, ...] = (user_id,)
        if kind is not None:
            sql += " AND kind = %s"
            args += (kind,)
        sql += " ORDER BY created_at, id"
        return [_credential(row) for row in await self._all(sql, args)]

    async def update_credential(
        self, credential_id: str, *, version: int, data: Mapping[str, Any], now: datetime
    ) -> bool:
        sql = (
            "UPDATE credentials SET data = %s, version = version + 1, updated_at = %s "
            "WHERE id = %s AND version = %s"
        )
        args = (json.dumps(dict(data)), now, credential_id, int(version))
        return await self._count(sql, args) == 1

    async def delete_credential(self, credential_id: str) -> bool:
        return await self._count("DELETE FROM credentials WHERE id = %s", (credential_id,)) == 1

    # -- the audit log ----------------------------------------------------------------------

    async def add_audit(self, record: AuditRecord) -> None:
        r = record
        row = (
            r.id,
            r.at,
            r.expires_at,
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
        await self._count(
            f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES ({_marks(_AUDIT_COLUMNS)})", row
        )

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        where: list[str] = []
        args: list[Any] = []
        if query.user_id is not None:
            where.append("user_id = %s")
            args.append(query.user_id)
        if query.events:
            where.append("event = ANY(%s)")
            args.append(list(query.events))
        if query.since is not None:
            where.append("at >= %s")
            args.append(query.since)
        if query.until is not None:
            where.append("at < %s")
            args.append(query.until)
        if query.before is not None:
            where.append("id < %s")
            args.append(query.before)
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT %s"
        args.append(query.limit)
        return [_audit(row) for row in await self._all(sql, args)]

    async def count_audit(
        self, events: Sequence[str], *, since: datetime, step: timedelta, steps: int
    ) -> dict[str, list[int]]:
        counts = {event: [0] * steps for event in events}
        if not events or steps <= 0:
            return counts
        sql = (
            "SELECT event, floor(extract(epoch FROM at - %s) / %s)::bigint, count(*) "
            "FROM audit WHERE event = ANY(%s) AND at >= %s AND at < %s GROUP BY 1, 2"
        )
        width = step.total_seconds()
        args = (since, width, list(events), since, since + step * steps)
        for event, window, count in await self._all(sql, args):
            counts[event][min(int(window), steps - 1)] += int(count)
        return counts

    async def prune_expired(self, *, now: datetime) -> int:
        """In batches of `prune_batch_size` rows found through the expiry index, each one
        statement: no transaction holds millions of row locks or stalls the pool."""
        total = 0
        for table in _PRUNED:
            sql = (
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table} WHERE expires_at < %s LIMIT %s))"
            )
            while True:
                deleted = await self._count(sql, (now, self._prune_batch))
                total += deleted
                if deleted < self._prune_batch:
                    break
                await asyncio.sleep(0)
        return total

    # -- one-time tokens and counters -------------------------------------------------------

    async def create_token(self, token: OneTimeToken) -> None:
        t = token
        args = (
            t.token_hash,
            t.kind,
            t.user_id,
            t.email,
            json.dumps(dict(t.data)),
            t.created_at,
            t.expires_at,
        )
        await self._count(
            f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES ({_marks(_TOKEN_COLUMNS)})", args
        )

    async def consume_token(self, token_hash: bytes, kind: str) -> OneTimeToken | None:
        sql = f"DELETE FROM tokens WHERE token_hash = %s AND kind = %s RETURNING {_TOKEN_COLUMNS}"
        row = await self._one(sql, (token_hash, kind))
        if row is None:
            return None
        return OneTimeToken(
            token_hash=bytes(row[0]),
            kind=row[1],
            user_id=row[2],
            email=row[3],
            data=json.loads(row[4]),
            created_at=row[5],
            expires_at=row[6],
        )

    async def delete_user_tokens(self, user_id: str, kinds: Sequence[str]) -> int:
        sql = "DELETE FROM tokens WHERE user_id = %s AND kind = ANY(%s)"
        return await self._count(sql, (user_id, list(kinds)))

    async def hit_counter(self, key: str, *, window_start: datetime, expires_at: datetime) -> int:
        sql = (
            "INSERT INTO counters (key, window_start, count, expires_at) VALUES (%s, %s, 1, %s) "
            "ON CONFLICT (key, window_start) DO UPDATE SET count = counters.count + 1 "
            "RETURNING count"
        )
        row = await self._one(sql, (key, window_start, expires_at))
        assert row is not None
        return int(row[0])

    async def get_counter(self, key: str, *, window_start: datetime) -> int:
        sql = "SELECT count FROM counters WHERE key = %s AND window_start = %s"
        row = await self._one(sql, (key, window_start), read=True)
        return 0 if row is None else int(row[0])

    async def clear_counter(self, key: str) -> None:
        await self._count("DELETE FROM counters WHERE key = %s", (key,))

    async def close(self) -> None:
        self._closed = True
        if self._opened:
            await self._pool.close()
