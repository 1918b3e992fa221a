"""What issue 20's pages cost, in one run and one process, as ratios against baselines
measured in the same run on the same SQLite file:

- `GET /accounts/ui/account` (resume from a cookie, sessions, audit, two-factor status,
  a template) and `GET /accounts/ui/admin` (the dashboard over `--records` audit records in
  the last 7 days: four hourly histograms and the active sessions, four SVGs) against
  `GET /accounts/user` with the same session's bearer token, the API's authenticated read;
- `count_audit` (counted in the store) against reading the same 7 days of records out, page
  by page, and counting them in Python (what a store without it would make the page do).

In process through httpx's ASGI transport (no sockets: the figures are the app's own cost).
Interleaved rounds, medians.

    python benchmarks/pages.py [--rounds 5] [--calls 200] [--records 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    AuditConfig,
    AuditQuery,
    AuditRecord,
    KeyRing,
    RateLimits,
    SealingKeys,
    SigningKey,
    TokenConfig,
    User,
)
from accounts_server.admin import CHARTED
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore

PASSWORD = "correct horse battery staple"


async def timed(calls: int, one: Callable[[], Awaitable[Any]]) -> float:
    """Microseconds per call."""
    start = time.perf_counter()
    for _ in range(calls):
        await one()
    return (time.perf_counter() - start) / calls * 1e6


async def seed(store: SQLiteStore, records: int, now: datetime) -> None:
    """`records` audit records spread over the last 7 days, as the events fall in practice
    (mostly sign-ins), in one transaction's worth of calls."""
    events = ("login_success",) * 6 + ("login_error", "create_user_success", "logout_success")
    span = 7 * 24 * 3600
    for n in range(records):
        at = now - timedelta(seconds=span * (n + 1) / (records + 1))
        await store.add_audit(
            AuditRecord(
                id=f"{int(at.timestamp() * 1000):013x}{n:06x}{secrets.token_hex(5)}",
                at=at,
                expires_at=at + timedelta(days=90),
                event=events[n % len(events)],
                user_id=f"u{n % 500}",
                ip="198.51.100.7",
            )
        )


async def read_out_and_count(store: SQLiteStore, since: datetime) -> Counter[str]:
    counts: Counter[str] = Counter()
    before = None
    while True:
        page = await store.list_audit(
            AuditQuery(events=CHARTED, since=since, before=before, limit=500)
        )
        counts.update(r.event for r in page)
        if len(page) < 500:
            return counts
        before = page[-1].id


async def main(rounds: int, calls: int, records: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "bench.db"))
        server = AccountsServer(
            store=store,
            tokens=TokenConfig(keys=KeyRing([SigningKey.generate()])),
            services=[PasswordService()],
            audit=AuditConfig(),
            sealing=SealingKeys.generate(),
            rate_limits=RateLimits(enabled=False),
            authorize_admin=lambda user, action: isinstance(user, User),
        )
        await store.setup()
        now = datetime.now(UTC)
        await seed(store, records, now)
        app = create_app(server, ui=True)
        transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as browser:
            shown = await browser.get("/accounts/ui/register")
            csrf = re.search(r'name="csrf" value="([^"]+)"', shown.text)
            assert csrf
            fields = {"csrf": csrf.group(1), "username": "bench", "password": PASSWORD}
            assert (await browser.post("/accounts/ui/register", data=fields)).status_code == 303
            login = await browser.post(
                "/accounts/password/authenticate",
                json={"user": {"username": "bench"}, "password": PASSWORD},
            )
            bearer = {"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
            since = now - timedelta(days=7)

            async def api() -> None:
                assert (await browser.get("/accounts/user", headers=bearer)).status_code == 200

            async def account() -> None:
                assert (await browser.get("/accounts/ui/account")).status_code == 200

            async def dashboard() -> None:
                assert (await browser.get("/accounts/ui/admin")).status_code == 200

            async def counted() -> None:
                await store.count_audit(CHARTED, since=since, step=timedelta(hours=1), steps=168)

            async def read_out() -> None:
                await read_out_and_count(store, since)

            kinds: dict[str, tuple[Callable[[], Awaitable[None]], int]] = {
                "GET /accounts/user": (api, calls),
                "GET /ui/account": (account, calls),
                "GET /ui/admin": (dashboard, max(calls // 20, 3)),
                "count_audit": (counted, max(calls // 20, 3)),
                "read out + count": (read_out, max(calls // 100, 2)),
            }
            for one, _ in kinds.values():  # warm-up
                await one()
            figures: dict[str, list[float]] = {name: [] for name in kinds}
            for _ in range(rounds):
                for name, (one, n) in kinds.items():
                    figures[name].append(await timed(n, one))
        server_median = {name: statistics.median(values) for name, values in figures.items()}
        await server.close()

    base = server_median["GET /accounts/user"]
    print(f"{records} audit records over 7 days; {rounds} rounds, medians (µs per call)")
    for name in ("GET /accounts/user", "GET /ui/account", "GET /ui/admin"):
        print(f"  {name:<20} {server_median[name]:>10.0f}  {server_median[name] / base:6.2f}x")
    count, out = server_median["count_audit"], server_median["read out + count"]
    print(f"  {'count_audit':<20} {count:>10.0f}  1.00x")
    print(f"  {'read out + count':<20} {out:>10.0f}  {out / count:6.2f}x count_audit")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--records", type=int, default=50_000)
    options = parser.parse_args()
    asyncio.run(main(options.rounds, options.calls, options.records))
