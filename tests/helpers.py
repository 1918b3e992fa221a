"""Helpers the tests share; everything goes through public interfaces."""

from __future__ import annotations

import asyncio
import itertools
import mailbox
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any, Self

from accounts_password import PasswordService
from accounts_server import AccountsServer, SigningKey, SMTPMailer

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


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM to the PID, SIGKILL after 5 s; a process that has already exited is left alone."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
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
