"""What the second factor adds to a login (issue 15), in one run and one process on a SQLite
file: `login_with_service("password", ...)` for a user without two-factor (the baseline: one
argon2id verify, a session write, a token pair) against the same user's login with a TOTP
code (plus a credential read, an AES-GCM unseal and seal, pyotp's three candidate codes and
one compare-and-set) and with a recovery code. Also the second step alone
(`two_factor.verify`), to show what is TOTP's and what is the password's.

Each round logs in --logins times per kind, interleaved; medians over --rounds rounds, as
ratios against the baseline. A code is spent by its login, so the injected clock moves one
30-second step between TOTP logins (no waiting).

    python benchmarks/two_factor.py [--rounds 5] [--logins 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    KeyRing,
    RateLimits,
    SealingKeys,
    SigningKey,
    TokenConfig,
)
from accounts_server.stores import SQLiteStore

PASSWORD = "correct horse battery staple"
INFO = ConnectionInfo(ip="192.0.2.1")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def main(rounds: int, logins: int) -> None:
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        service = PasswordService()
        server = AccountsServer(
            store=SQLiteStore(Path(tmp) / "accounts.db"),
            tokens=TokenConfig(keys=KeyRing([SigningKey.generate()])),
            services=[service],
            sealing=SealingKeys.generate(),
            rate_limits=RateLimits(enabled=False),
            clock=clock,
        )
        ctx = server.context
        await service.create_user(ctx, username="plain", password=PASSWORD)
        mfa = await service.create_user(ctx, username="mfa", password=PASSWORD)
        secret = await server.two_factor.new_secret()
        totp = pyotp.TOTP(secret.base32)
        await server.two_factor.enable(
            mfa, {"base32": secret.base32}, totp.at(clock.now.timestamp())
        )
        recovery: list[str] = []

        def next_code() -> str:
            clock.now += timedelta(seconds=30)
            return totp.at(clock.now.timestamp())

        async def login(user: str, code: str | None) -> float:
            params = {"user": user, "password": PASSWORD, **({"code": code} if code else {})}
            start = time.perf_counter()
            await server.login_with_service("password", params, INFO)
            return time.perf_counter() - start

        async def second_step() -> float:
            code = next_code()
            start = time.perf_counter()
            await server.two_factor.verify(mfa, code)
            return time.perf_counter() - start

        results: dict[str, list[float]] = {"password": [], "password+totp": [], "recovery": []}
        results["second step alone"] = []
        for _ in range(rounds):
            recovery[:] = await server.two_factor.regenerate_recovery_codes(mfa, next_code())
            samples: dict[str, list[float]] = {name: [] for name in results}
            for i in range(logins):
                samples["password"].append(await login("plain", None))
                samples["password+totp"].append(await login("mfa", next_code()))
                if i < len(recovery):
                    samples["recovery"].append(await login("mfa", recovery[i]))
                samples["second step alone"].append(await second_step())
            for name, values in samples.items():
                results[name].append(statistics.median(values))
        await server.close()

    base = statistics.median(results["password"])
    print(f"{'login':<20}{'median ms':>10}{'x baseline':>12}")
    for name, medians in results.items():
        value = statistics.median(medians)
        print(f"{name:<20}{value * 1000:>10.2f}{value / base:>12.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--logins", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.logins))
