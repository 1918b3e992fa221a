"""Memory soak of password hashing: the password service's register / login / verify mix for a
bounded time, in-process, with RSS sampled every 10 s, for the old hashing and the new one in
the same run (issue 14 item 9).

    python benchmarks/soak.py [--seconds 600] [--modes old,new,return] [--clients 8] [--every 10]
                              [--warmup 10] [--json out.json]

Modes, each in a child process of its own (malloc's state is process-wide: the return mode's
threshold cannot be undone, and the old mode's arenas would be the next mode's baseline):

- `old`: hashing as before, on asyncio's default executor (`asyncio.to_thread`, up to
  `min(32, cpu_count + 4)` threads) with glibc's own malloc threshold;
- `new`: the hasher as shipped: its own `max_concurrent` threads, each keeping one buffer;
- `return`: `PasswordHasher(return_memory=True)`: buffers unmapped after each hash.

Each client loops: register a user (one hash), log in with the right and then a wrong password,
re-check the password as before deleting an account (three verifies). After `--warmup` seconds
the RSS is the baseline; the series, its growth over the baseline, the RSS once the clients
stopped (no buffer in flight: what the process keeps), hashes per second and CPU per hash are
printed. Not part of the test suite: nothing here passes or fails a build.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from accounts_password import PasswordHasher, PasswordService
from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    InvalidCredentials,
    KeyRing,
    Overloaded,
    RateLimits,
    SigningKey,
    TokenConfig,
)
from accounts_server.stores import SQLiteStore

_T = TypeVar("_T")
MODES = ("old", "new", "return")
PASSWORD = "correct horse battery staple"
INFO = ConnectionInfo()


class DefaultExecutorHasher(PasswordHasher):
    """Where the hash ran before issue 14 item 9 (`git show e30a5cf^:services/password/
    accounts_password/hashing.py`): the same semaphore, the hash on asyncio's default executor.
    The hasher's own threads never start, so neither does the malloc threshold change."""

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        try:
            async with asyncio.timeout(self.max_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded() from None
        try:
            return await asyncio.to_thread(fn)
        finally:
            self._slots.release()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def soak(
    mode: str, seconds: float, every: float, warmup: float, clients: int
) -> dict[str, Any]:
    hasher = (
        DefaultExecutorHasher() if mode == "old" else PasswordHasher(return_memory=mode == "return")
    )
    service = PasswordService(hasher=hasher)
    serial = itertools.count()
    ops = {"register": 0, "login": 0, "verify": 0, "overloaded": 0}
    with tempfile.TemporaryDirectory() as tmp:
        server = AccountsServer(
            store=SQLiteStore(Path(tmp) / "accounts.db"),
            tokens=TokenConfig(keys=KeyRing([SigningKey.generate()])),
            services=[service],
            rate_limits=RateLimits(enabled=False),
        )

        stop = asyncio.Event()

        async def client() -> None:
            # Ends on `stop` after its round, so no hash is cut off at the end.
            while not stop.is_set():
                n = next(serial)
                email = f"soak{n}@example.com"
                try:
                    user = await service.create_user(
                        server.context, username=f"soak{n}", email=email, password=PASSWORD
                    )
                    ops["register"] += 1
                    await server.login_with_service(
                        "password", {"user": email, "password": PASSWORD}, INFO
                    )
                    ops["login"] += 1
                    try:
                        await server.login_with_service(
                            "password", {"user": email, "password": "wrong password"}, INFO
                        )
                    except InvalidCredentials:
                        ops["login"] += 1
                    if await service.verify_secret(user, PASSWORD, server.context):
                        ops["verify"] += 1
                except Overloaded:
                    ops["overloaded"] += 1

        def hashed() -> int:
            return ops["register"] + ops["login"] + ops["verify"]

        gc.collect()
        start_mib = rss_mib()
        tasks = [asyncio.create_task(client()) for _ in range(clients)]
        try:
            await asyncio.sleep(warmup)
            gc.collect()
            start, done_before, cpu_before = time.monotonic(), hashed(), cpu_seconds()
            series = [(0.0, rss_mib())]
            while (elapsed := time.monotonic() - start) < seconds:
                await asyncio.sleep(min(every, seconds - elapsed))
                series.append((round(time.monotonic() - start, 1), rss_mib()))
            done, cpu = hashed() - done_before, cpu_seconds() - cpu_before
            names = [t.name for t in threading.enumerate()]
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            gc.collect()
            idle_mib = rss_mib()  # no hash in flight: what the process keeps
            hasher.close()
            await server.close()
    baseline = series[0][1]
    return {
        "mode": mode,
        "max_concurrent": hasher.max_concurrent,
        "clients": clients,
        "start_mib": start_mib,
        "rss_mib": series,
        "baseline_mib": baseline,
        "idle_mib": idle_mib,
        "final_growth": series[-1][1] / baseline,
        "max_growth": max(rss for _, rss in series) / baseline,
        "hashes_per_s": done / seconds,
        "cpu_ms_per_hash": 1000 * cpu / max(done, 1),
        "ops": ops,
        "hashing_threads": sum(n.startswith(PasswordHasher.thread_name_prefix) for n in names),
        "asyncio_threads": sum(n.startswith("asyncio_") for n in names),
    }


def run_child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)
    command = [sys.executable, "-X", "faulthandler", __file__, "--child", mode]
    for option in ("seconds", "every", "warmup", "clients"):
        command += [f"--{option}", str(getattr(args, option))]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate(timeout=args.seconds + args.warmup + 120)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
    if process.returncode != 0:
        raise SystemExit(f"the {mode} soak failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


def report(result: dict[str, Any]) -> None:
    series = "  ".join(f"{t:.0f}s:{rss:.1f}" for t, rss in result["rss_mib"])
    print(
        f"\n{result['mode']}: {result['clients']} clients, {result['max_concurrent']} hashing "
        f"slots; RSS {result['start_mib']:.1f} MiB at start, {result['baseline_mib']:.1f} MiB "
        "after warm-up\n"
        f"  RSS MiB  {series}\n"
        f"  growth   final x{result['final_growth']:.3f}, max x{result['max_growth']:.3f} "
        "(samples may catch buffers in flight)\n"
        f"  idle after the run (no hash in flight): {result['idle_mib']:.1f} MiB, "
        f"x{result['idle_mib'] / result['start_mib']:.2f} the RSS at start\n"
        f"  {result['hashes_per_s']:.1f} hashes+verifies/s, "
        f"{result['cpu_ms_per_hash']:.1f} ms CPU each  {result['ops']}\n"
        f"  threads at the end: {result['hashing_threads']} hashing, "
        f"{result['asyncio_threads']} asyncio_"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="per mode, after warm-up")
    parser.add_argument("--every", type=float, default=10.0, help="RSS sampling interval")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4 * len(os.sched_getaffinity(0)))
    parser.add_argument("--modes", default="old,new,return", help=f"comma-separated, of {MODES}")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(soak(args.child, args.seconds, args.every, args.warmup, args.clients))
        print(json.dumps(result))
        return
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {sorted(unknown)}")
    results = []
    for mode in modes:
        print(f"soaking {mode} for {args.warmup:.0f} + {args.seconds:.0f} s ...", flush=True)
        results.append(run_child(mode, args))
        report(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
