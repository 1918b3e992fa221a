"""How long a request waits on a frozen MongoDB (the process stopped with SIGSTOP, not dead:
connections stay open and nothing answers), with the request's store deadline (the default,
5 s for all its store calls) against without one (each call waits its own 5 s operation
timeout), in one run on the MongoDB-wire server. GET /user and a password login, over the
ASGI app; both must end in 503 StoreUnavailable.

    python benchmarks/frozen_mongo.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from accounts_password import PasswordService
from accounts_server import AccountsServer, KeyRing, SigningKey, TokenConfig
from accounts_server.deadline import STORE_DEADLINE
from accounts_server.http import create_app
from accounts_server.stores.mongo import MongoStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import WireServer  # the repository's own test server

PASSWORD = "correct horse battery staple"


async def frozen_seconds(deadline: float) -> dict[str, float]:
    wire = WireServer.start()
    store = MongoStore.from_url(wire.url, "frozen")
    server = AccountsServer(
        store=store,
        tokens=TokenConfig(keys=KeyRing([SigningKey.generate()])),
        services=[PasswordService()],
    )
    transport = httpx.ASGITransport(app=create_app(server, store_deadline=deadline))
    user = {"username": "f", "email": "f@example.com", "password": PASSWORD}
    login = {"user": "f", "password": PASSWORD}
    took: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
            await api.post("/password/register", json={"user": user})
            tokens = (await api.post("/password/authenticate", json=login)).json()["tokens"]
            auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
            os.kill(wire.pid, signal.SIGSTOP)
            try:
                for name, call in (
                    ("GET /user", lambda: api.get("/user", headers=auth)),
                    ("login", lambda: api.post("/password/authenticate", json=login)),
                ):
                    start = time.perf_counter()
                    response = await call()
                    took[name] = time.perf_counter() - start
                    assert response.json()["code"] == "StoreUnavailable", response.text
            finally:
                os.kill(wire.pid, signal.SIGCONT)
    finally:
        wire.stop()
        await store.close()
    return took


async def main() -> None:
    without = await frozen_seconds(1e9)
    with_ = await frozen_seconds(STORE_DEADLINE)
    print("a frozen MongoDB (SIGSTOP), 5 s per operation; seconds until the 503")
    for name in without:
        print(
            f"{name:10} without a deadline {without[name]:5.1f}   with the {STORE_DEADLINE:.0f} s "
            f"deadline {with_[name]:5.1f}   {with_[name] / without[name]:.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
