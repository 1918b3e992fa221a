"""Helpers the tests share; everything goes through public interfaces."""

from __future__ import annotations

import itertools
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accounts_password import PasswordService
from accounts_server import AccountsServer, SigningKey

KEYS = Path(__file__).parent / "keys"
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
