"""Whether the hot paths stay flat as the SQLite file grows, and what pruning a million
expired sessions costs (issue 17).

For each size (default 1,000, 100,000 and 1,000,000 live sessions of other users, bulk-seeded
in one transaction), in one process on a SQLite file: `resume_session` (what GET /user does)
and `refresh_tokens`, each over --calls sessions of its own opened through the public API, so
every call reads its session from the file (no read-cache hit). Medians and p99 in µs, as
ratios against the smallest size in the same run. Then `accounts-server sessions prune` (the
CLI, a process of its own) on a file with --expired expired sessions: wall time and peak RSS,
beside the same command on an empty file.

    python benchmarks/scale.py [--sizes 1000,100000,1000000] [--calls 2000] [--expired 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    KeyRing,
    RateLimits,
    SigningKey,
    TokenConfig,
)
from accounts_server.stores import SQLiteStore

INFO = ConnectionInfo(ip="192.0.2.1", user_agent="bench")


def seed(path: Path, sessions: int, *, expired: bool) -> None:
    """`sessions` sessions of the user `seed`, live for a day or expired over the last one,
    in one transaction (a benchmark's set-up; the server writes sessions one by one)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    now = datetime.now(UTC).timestamp()
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
            (f"seed-{i:08d}", now - 90000, now - 90000, now - 90000,
             (now - 86400 + i * span) if expired else now + 86400, i.to_bytes(32, "big"))
            for i in range(sessions)
        ),
    )  # fmt: skip
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def hot_paths(path: Path, calls: int) -> dict[str, tuple[float, float]]:
    """µs (median, p99) of a resume and of a refresh, each on a session nobody read since
    it was opened."""
    store = SQLiteStore(path)
    server = AccountsServer(
        store=store,
        tokens=TokenConfig(keys=KeyRing([SigningKey.generate()])),
        rate_limits=RateLimits(enabled=False),
    )
    try:
        user = await server.create_user(username="bench")
        pairs = [(await server.login_with_user(user, INFO)).tokens for _ in range(2 * calls)]
        found: dict[str, list[float]] = {"resume": [], "refresh": []}
        for pair in pairs[:calls]:
            start = time.perf_counter()
            await server.resume_session(pair.access_token)
            found["resume"].append((time.perf_counter() - start) * 1e6)
        for pair in pairs[calls:]:
            start = time.perf_counter()
            await server.refresh_tokens(pair.access_token, pair.refresh_token, INFO)
            found["refresh"].append((time.perf_counter() - start) * 1e6)
        return {name: quantiles(samples) for name, samples in found.items()}
    finally:
        await server.close()


def prune(path: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of `accounts-server sessions prune` on `path`."""
    cli = shutil.which("accounts-server") or str(Path(sys.executable).parent / "accounts-server")
    # A parent of its own per run, so the peak is this prune's alone.
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
        "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, cli, "sessions", "prune", "--db", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds, kib = done.stdout.split()
    return float(seconds), int(kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--expired", type=int, default=1_000_000)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"$ python benchmarks/scale.py --sizes {args.sizes} --calls {args.calls}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"scale-{size}.db"
            asyncio.run(SQLiteStore(path).close())  # the schema
            seed(path, size, expired=False)
            rows.append((size, asyncio.run(hot_paths(path, args.calls))))
        base = rows[0][1]
        print(f"\n{'sessions':>10s} {'route':8s} {'p50 µs':>8s} {'p99 µs':>8s} {'p50 x':>7s}")
        for size, found in rows:
            for name, (p50, p99) in found.items():
                ratio = p50 / base[name][0]
                print(f"{size:10,d} {name:8s} {p50:8.1f} {p99:8.1f} {ratio:7.2f}")
        empty = Path(tmp) / "empty.db"
        asyncio.run(SQLiteStore(empty).close())
        full = Path(tmp) / "expired.db"
        asyncio.run(SQLiteStore(full).close())
        seed(full, args.expired, expired=True)
        idle_s, idle_mib = prune(empty)
        full_s, full_mib = prune(full)
        left = sqlite3.connect(full).execute("SELECT count(*) FROM sessions").fetchone()[0]
    print(f"\nsessions prune, empty file: {idle_s:6.2f} s, peak RSS {idle_mib:6.1f} MiB")
    print(
        f"sessions prune, {args.expired:,d} expired: {full_s:6.2f} s, peak RSS "
        f"{full_mib:6.1f} MiB ({left} sessions left)"
    )


if __name__ == "__main__":
    main()
