"""Helpers the tests share; everything goes through public interfaces."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accounts_password import PasswordService
from accounts_server import AccountsServer, SigningKey

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
    user = await service.create_user(server, username=username, email=email, password=password)
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
