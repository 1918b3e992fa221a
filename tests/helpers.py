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
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from accounts_password import PasswordService
from accounts_server import AccountsServer, SigningKey, SMTPMailer

KEYS = Path(__file__).parent / "keys"
ROOT = Path(__file__).parent.parent
#: The shared test servers live beside the project (CI has them there too).
TEST_SERVERS = Path(
    os.environ.get("ACCOUNTS_TEST_SERVERS", ROOT.parent / "shared" / "test-servers")
)
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


def wire_server_unavailable() -> str | None:
    """Why the MongoDB-wire server cannot be started here, or None if it can."""
    script = TEST_SERVERS / "mongodb-wire" / "start.sh"
    if not script.exists():
        return f"the MongoDB-wire server is not at {script} (set ACCOUNTS_TEST_SERVERS)"
    if shutil.which("node") is None:
        return "node is not installed (the MongoDB-wire server needs it)"
    return None


@dataclass
class WireServer:
    """The shared MongoDB-wire server (in memory) on 127.0.0.1, owned by its PID."""

    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @classmethod
    def start(cls, port: int | None = None) -> WireServer:
        port = port or free_port()
        result = subprocess.run(
            ["bash", str(TEST_SERVERS / "mongodb-wire" / "start.sh"), str(port)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"MongoDB-wire server did not start: {result.stderr[-2000:]}")
        return cls(port=port, pid=int(result.stdout.strip().splitlines()[-1]))

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(TEST_SERVERS / "mongodb-wire" / "stop.sh"), str(self.pid)],
            capture_output=True,
            timeout=30,
            check=False,
        )


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
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def mailer(self) -> SMTPMailer:
        return SMTPMailer(sender="accounts@example.com", port=self.port)

    def messages(self, to: str) -> list[Message]:
        box = mailbox.Maildir(self.maildir)
        return [m for key, m in sorted(box.items()) if key not in self.seen and m["To"] == to]

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
