"""Helpers the tests share; everything goes through public interfaces."""

from __future__ import annotations

import asyncio
import itertools
import mailbox
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self
from urllib.parse import quote, urlsplit

from accounts_password import PasswordService
from accounts_server import AccountsServer, SigningKey, SMTPMailer

if TYPE_CHECKING:
    from accounts_server.stores.postgres import PostgresStore

KEYS = Path(__file__).parent / "keys"
#: The Node servers the tests start (tests/servers/README.md).
SERVERS = Path(__file__).parent / "servers"
PASSWORD = "correct horse battery staple"
_serial = itertools.count()


def load_key(name: str) -> SigningKey:
    return SigningKey.from_file(KEYS / f"{name}.pem")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Account:
    user_id: str
    username: str
    email: str
    password: str = PASSWORD

    def credentials(self) -> dict[str, Any]:
        return {"user": {"email": self.email}, "password": self.password}


async def register(server: AccountsServer, *, password: str = PASSWORD) -> Account:
    n = next(_serial)
    username, email = f"user{n}", f"user{n}@example.com"
    service = server.services["password"]
    assert isinstance(service, PasswordService)
    user = await service.create_user(
        server.context, username=username, email=email, password=password
    )
    return Account(user.id, username, email, password)


def node_unavailable(server: str) -> str | None:
    """Why a Node server from tests/servers/ cannot run here, or None if it can."""
    if shutil.which("node") is None:
        return f"node is not installed (the {server} needs it)"
    if shutil.which("npm") is None:
        return f"npm is not installed (the {server} is installed with it)"
    return None


def wire_server_unavailable() -> str | None:
    """Why the MongoDB-wire server cannot be started here, or None if it can."""
    return node_unavailable("MongoDB-wire server")


def npm_ci(directory: Path) -> None:
    """Install what `directory`'s lockfile pins into its (gitignored) node_modules, once: again
    only when the lockfile is newer than the last install."""
    installed = directory / "node_modules" / ".package-lock.json"
    lockfile = directory / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lockfile.stat().st_mtime:
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm ci in {directory} failed: {result.stderr[-2000:]}")


def stop_process(process: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM) -> None:
    """`sig` (SIGTERM) to the PID, SIGKILL after 5 s; a process that has already exited is left
    alone."""
    if process.poll() is not None:
        return
    os.kill(process.pid, sig)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class NodeServer:
    """A Node server from tests/servers/ on 127.0.0.1, owned by its PID; its output goes to an
    anonymous temporary file, shown if it fails to start."""

    port: int
    process: subprocess.Popen[bytes]
    output: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def launch(
        cls,
        name: str,
        script: str,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Self:
        """`node tests/servers/{name}/{script} PORT ARGS...` (with `env` added to the
        environment), returned once PORT accepts."""
        directory = SERVERS / name
        npm_ci(directory)
        port = port or free_port()
        output = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        process = subprocess.Popen(
            ["node", script, str(port), *args],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
        )
        server = cls(port, process, output)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return server
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    output.seek(0)
                    log = output.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"the {name} server did not start:\n{log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)
        self.output.close()


class WireServer(NodeServer):
    """The MongoDB-wire server (CongoDB, in memory, with tests/servers/mongodb-wire's fixes);
    with `replica_set`, the primary of a one-member replica set of that name."""

    replica_set: str | None = None

    @property
    def url(self) -> str:
        if self.replica_set:
            return (
                f"mongodb://127.0.0.1:{self.port}/?replicaSet={self.replica_set}&retryWrites=true"
            )
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @classmethod
    def start(cls, port: int | None = None, *, replica_set: str | None = None) -> WireServer:
        env = None if replica_set is None else {"CONGO_REPLICA_SET": replica_set}
        server = cls.launch("mongodb-wire", "server.mjs", port=port, env=env)
        server.replica_set = replica_set
        return server


#: The OS user PostgreSQL runs as when we are root: initdb and postgres refuse to run as root.
POSTGRES_USER = "postgres"


def _postgres_bindir() -> Path | None:
    """Where initdb and postgres are: `pg_config --bindir` if it names a directory holding them
    (Debian's /usr/bin/pg_config may come from libpq-dev alone), else the highest version in
    Debian's /usr/lib/postgresql/*/bin."""
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and all((bindir / b).exists() for b in ("initdb", "postgres")):
            return bindir

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))

    found = [b for b in Path("/usr/lib/postgresql").glob("*/bin") if (b / "initdb").exists()]
    return max(found, key=version) if found else None


def postgres_unavailable() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None if it can."""
    if _postgres_bindir() is None:
        return "PostgreSQL is not installed (CI installs it: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            return f"we run as root and there is no {POSTGRES_USER!r} user to run PostgreSQL as"
    return None


def database_url(url: str, name: str) -> str:
    """`url` (a postgresql:// URL) naming database `name` instead, its query kept."""
    return urlsplit(url)._replace(path="/" + quote(name, safe="")).geturl()


def create_database(url: str, name: str) -> str:
    """A new, empty database `name` on the server at `url`: its URL. Through psycopg, imported
    here so that only the PostgreSQL tests need it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(url, name)


def drop_database(url: str, name: str) -> None:
    """Drop database `name` on the server at `url`, closing any connection a test left open
    (FORCE, PostgreSQL 13+): on a shared POSTGRES_URL server, test databases do not pile up."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@asynccontextmanager
async def postgres_store(url: str, **options: Any) -> AsyncIterator[PostgresStore]:
    """A PostgresStore in a schema of its own on `url`'s database, dropped afterwards: a
    test's own store, far cheaper than a database per test."""
    import psycopg
    from psycopg import sql

    from accounts_server.stores.postgres import PostgresStore

    schema = f"test_{uuid.uuid4().hex}"
    store = PostgresStore(url, schema=schema, **options)
    try:
        yield store
    finally:
        await store.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            await connection.execute(drop)


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust authentication, role `accounts`),
    owned by its PID, its output in `log`.

    As root, initdb and postgres run as the `postgres` OS user, and the cluster lives in a
    directory of its own under the system temp dir, removed by stop(): pytest's temp dirs are
    0700 root's, where that user cannot reach. They run through subprocess's user/group, not
    runuser: runuser stays the parent, and on SIGTERM it SIGKILLs its child 2 s after
    forwarding the signal, killing the postmaster mid-shutdown under its backends."""

    port: int
    data: Path
    log: Path
    bindir: Path
    #: Where postgres runs (its socket directory), and as whom (subprocess's user/group).
    home: Path
    owner: dict[str, Any]
    #: The directory stop() removes (as root), else None.
    private: Path | None = None
    process: subprocess.Popen[bytes] = field(init=False)

    @property
    def url(self) -> str:
        return f"postgresql://accounts@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, directory: Path) -> PostgresServer:
        """initdb, then postgres on a free port, returned once it accepts connections."""
        bindir = _postgres_bindir()
        if bindir is None:
            raise RuntimeError(postgres_unavailable())
        # As the postgres user (uid, gid; no supplementary groups), when we are root.
        owner: dict[str, Any] = {}
        private = None
        home = directory
        if os.geteuid() == 0:
            user = pwd.getpwnam(POSTGRES_USER)
            owner = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            private = home = Path(tempfile.mkdtemp(prefix="accounts-postgres-"))
            os.chown(home, user.pw_uid, user.pw_gid)
        data = home / "data"
        log = directory / "postgres.log"
        for locale in ("C.UTF-8", "C"):  # C.UTF-8 is not everywhere
            initdb = subprocess.run(
                [
                    *(bindir / "initdb", "-D", data, "-A", "trust", "-U", "accounts"),
                    *("--encoding=UTF8", f"--locale={locale}"),
                ],
                cwd=home,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                **owner,
            )
            if initdb.returncode == 0:
                break
            shutil.rmtree(data, ignore_errors=True)
        else:
            if private:
                shutil.rmtree(private, ignore_errors=True)
            raise RuntimeError(f"initdb failed:\n{initdb.stdout[-1000:]}{initdb.stderr[-2000:]}")
        server = cls(free_port(), data, log, bindir, home, owner, private)
        server.resume()
        return server

    def resume(self) -> None:
        """Start postgres on the cluster (again, after `halt`: same data, same port), returned
        once it accepts connections."""
        with self.log.open("ab") as output:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    *(self.bindir / "postgres", "-D", self.data, "-k", self.home),
                    *("-h", "127.0.0.1", "-p", str(self.port), "-c", "max_connections=200"),
                    # The data dies with the run: durability would only cost time.
                    *("-c", "fsync=off", "-c", "synchronous_commit=off"),
                    *("-c", "full_page_writes=off"),
                ],
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                **self.owner,
            )
        # pg_isready, not a TCP connect: the port opens before the server accepts sessions.
        ready = [
            *(str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1"),
            *("-p", str(self.port), "-t", "1"),
        ]
        deadline = time.monotonic() + 30
        while subprocess.run(ready, check=False, timeout=10).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres did not start:\n{tail}")
            time.sleep(0.05)

    def halt(self) -> None:
        """Stop postgres (fast shutdown: its sessions end) and keep the cluster, to `resume`."""
        stop_process(self.process, signal.SIGINT)

    def create_database(self, name: str) -> str:
        """A new, empty database on this server: its URL."""
        return create_database(self.url, name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open sessions are ended, where SIGTERM's smart shutdown would
        wait for them), SIGKILL after 5 s; then the private directory goes."""
        stop_process(self.process, signal.SIGINT)
        if self.private:
            shutil.rmtree(self.private, ignore_errors=True)


def _arrival(key: str) -> tuple[int, ...]:
    """A Maildir key (`<seconds>.M<microseconds>P<pid>Q<count>.<host>`) as numbers: sorted as
    text, `M99` would come after `M100`."""
    match = re.match(r"(\d+)\.M(\d+)P(\d+)Q(\d+)", key)
    return tuple(int(part) for part in match.groups()) if match else (0,)


@dataclass
class SMTPServer:
    """aiosmtpd in its own process on 127.0.0.1, delivering into a Maildir we read."""

    port: int
    maildir: Path
    process: subprocess.Popen[bytes]
    #: Messages delivered before the current test began; shared server, per-test view.
    seen: frozenset[str] = frozenset()

    def checkpoint(self) -> None:
        self.seen = frozenset(mailbox.Maildir(self.maildir).keys())

    @classmethod
    def start(cls, maildir: Path) -> SMTPServer:
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{port}",
                "-c",
                "aiosmtpd.handlers.Mailbox",
                str(maildir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return cls(port, maildir, process)
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    raise RuntimeError("aiosmtpd did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)

    def mailer(self) -> SMTPMailer:
        return SMTPMailer(sender="accounts@example.com", port=self.port)

    def messages(self, to: str) -> list[Message]:
        box = mailbox.Maildir(self.maildir)
        found = [(key, m) for key, m in box.items() if key not in self.seen and m["To"] == to]
        return [m for _, m in sorted(found, key=lambda item: _arrival(item[0]))]

    async def wait_for(self, to: str, count: int = 1) -> Message:
        """The `count`-th message to `to` (polls: delivery is another process)."""
        async with asyncio.timeout(20):
            while len(found := self.messages(to)) < count:
                await asyncio.sleep(0.05)
        return found[count - 1]

    def link_token(self, message: Message) -> str:
        body = next(p for p in message.walk() if p.get_content_type() == "text/plain")
        text = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
        match = re.search(
            r"https?://\S+/(?:verify-email|reset-password|enroll-account)/(\S+)", text
        )
        assert match, text
        return match.group(1)
