"""What a prune of a million expired sessions costs the requests served meanwhile (issue 14).

Seeds --sessions expired sessions (default 1,000,000) into a SQLite file in one bulk insert,
then, in one run and one process, measures `resume_session` (what GET /user does) from a task
that issues one every --period-ms:
  baseline  - no prune running
  batched   - while `prune_expired` runs, in batches of --batch rows (as shipped)
  one batch - while `prune_expired` deletes every row in one statement, as before batching
              (on a copy of the seeded file; --no-compare skips it)
Latency is counted from when each call was due, so the time a call waits for an event loop
held by the prune counts (the coordinated omission wrk2 corrects for). Medians of nothing:
one pass each, p50/p99/max with ratios against the baseline.

    python benchmarks/prune.py [--sessions 1000000] [--batch 1000] [--period-ms 1]
                               [--baseline-seconds 3] [--max-seconds 300] [--no-compare]

Bounded in time: a prune still running when --max-seconds (from the start) is reached is
cancelled between batches (a single-statement prune cannot be; it ends on its own) and
reported as cut short.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    KeyRing,
    RateLimits,
    SigningKey,
    TokenConfig,
)
from accounts_server.stores import SQLiteStore

PASSWORD = "correct horse battery staple"


@dataclass
class Run:
    name: str
    latencies: list[float]  # seconds, one per call
    prune_seconds: float | None = None
    pruned: int | None = None
    cut_short: bool = False

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_on(path: Path, batch: int) -> AccountsServer:
    return AccountsServer(
        store=SQLiteStore(path, prune_batch_size=batch),
        tokens=TokenConfig(keys=KeyRing([SigningKey.generate("EdDSA")])),
        services=[PasswordService()],
        rate_limits=RateLimits(enabled=False),
    )


async def seed(path: Path, sessions: int) -> None:
    """A user and `sessions` sessions that expired over the last day, in one transaction."""
    await SQLiteStore(path).close()  # the schema
    now = datetime.now(UTC).timestamp()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO users (id, username, username_canonical, created_at, updated_at) "
        "VALUES ('seed', 'seed', 'seed', ?, ?)",
        (now, now),
    )
    span = 86400.0 / max(1, sessions)
    db.executemany(
        "INSERT INTO sessions (id, user_id, valid, created_at, updated_at, last_used_at, "
        "expires_at, refresh_hash) VALUES (?, 'seed', 1, ?, ?, ?, ?, ?)",
        (
            (f"expired-{i:08d}", now - 90000, now - 90000, now - 90000, now - 86400 + i * span,
             i.to_bytes(32, "big"))
            for i in range(sessions)
        ),
    )  # fmt: skip
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


async def login(server: AccountsServer) -> str:
    service = server.services["password"]
    assert isinstance(service, PasswordService)
    if await server.store.find_user_by_username("bench") is None:
        await service.create_user(
            server.context, username="bench", email="bench@example.com", password=PASSWORD
        )
    params = {"user": {"username": "bench"}, "password": PASSWORD}
    result = await server.login_with_service("password", params, ConnectionInfo(ip="192.0.2.1"))
    return result.tokens.access_token


async def probe(
    server: AccountsServer, token: str, period: float, stop: asyncio.Event
) -> list[tuple[float, float]]:
    """One `resume_session` per period: (when it was due, its latency from then). Waits by
    yielding to the loop (not by a timer, whose slack would swamp microseconds), so a call is
    late only by what held the loop; calls that fell due meanwhile run back to back once it is
    free, as queued requests would."""
    samples: list[tuple[float, float]] = []
    due = time.perf_counter()
    while not stop.is_set():
        if time.perf_counter() < due:
            await asyncio.sleep(0)
            continue
        await server.resume_session(token)
        samples.append((due, time.perf_counter() - due))
        due += period
    return samples


async def measure(
    name: str, path: Path, batch: int, period: float, seconds: float | None, deadline: float
) -> Run:
    """Probe for `seconds` with no prune, or (seconds None) while a prune runs: then only the
    calls that fell due between its start and its end count."""
    server = server_on(path, batch)
    token = await login(server)
    for _ in range(1000):  # warm: the cache holds the session and the user
        await server.resume_session(token)
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(server, token, period, stop))
    run = Run(name, [])
    window = (0.0, float("inf"))
    if seconds is not None:
        await asyncio.sleep(seconds)
    else:
        await asyncio.sleep(0.2)  # the probe is under way
        start = time.perf_counter()
        pruning = asyncio.create_task(server.prune_expired())
        try:
            run.pruned = await asyncio.wait_for(pruning, max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            run.cut_short = True
        window = (start, time.perf_counter())
        run.prune_seconds = window[1] - start
        await asyncio.sleep(0.2)  # the calls that fell due during the prune are answered
    stop.set()
    run.latencies = [late for due, late in await probing if window[0] <= due <= window[1]]
    await server.store.close()
    return run


def report(runs: list[Run], sessions: int, batch: int, period: float) -> None:
    base = runs[0]
    p50, p99 = base.pct(0.50), base.pct(0.99)
    print(
        f"resume_session every {period * 1e3:g} ms while pruning {sessions:,} expired sessions"
        f" (batches of {batch:,}); latency from when each call was due"
    )
    print(f"  {'':10s} {'calls':>7s} {'p50 µs':>9s} {'p99 µs':>10s} {'max µs':>11s}"
          f" {'p50/base':>9s} {'p99/base':>9s}  prune")  # fmt: skip
    for run in runs:
        prune = ""
        if run.prune_seconds is not None:
            rate = (run.pruned or 0) / run.prune_seconds
            prune = f"{run.prune_seconds:.2f} s, {rate:,.0f} rows/s"
            prune += " (cut short at --max-seconds)" if run.cut_short else ""
        print(
            f"  {run.name:10s} {len(run.latencies):7d} {run.pct(0.50) * 1e6:9.0f}"
            f" {run.pct(0.99) * 1e6:10.0f} {max(run.latencies) * 1e6:11.0f}"
            f" {run.pct(0.50) / p50:8.1f}x {run.pct(0.99) / p99:8.1f}x  {prune}"
        )


async def main(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.max_seconds
    period = args.period_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        seeded, copy = Path(tmp) / "seeded.db", Path(tmp) / "copy.db"
        started = time.perf_counter()
        await seed(seeded, args.sessions)
        print(f"seeded {args.sessions:,} expired sessions in {time.perf_counter() - started:.1f} s")
        if args.compare:
            shutil.copy(seeded, copy)
        runs = [
            await measure("baseline", seeded, args.batch, period, args.baseline_seconds, deadline),
            await measure("batched", seeded, args.batch, period, None, deadline),
        ]
        if args.compare:
            runs.append(await measure("one batch", copy, 10**12, period, None, deadline))
        report(runs, args.sessions, args.batch, period)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--period-ms", type=float, default=1.0)
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--no-compare", dest="compare", action="store_false")
    asyncio.run(main(parser.parse_args()))
