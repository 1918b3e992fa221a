"""What passkeys cost at login (accounts-webauthn), in one run and one process on a SQLite
file: `login_with_service("password", ...)` for a user without a second factor (the
baseline: one argon2id verify, a session write, a token pair) against a passwordless passkey
login (the `login/options` endpoint, a one-time challenge issued; then `login_with_service(
"webauthn", ...)`: the challenge redeemed, a credential and a user read, py_webauthn's
verify of the client data, authenticator data and signature, one compare-and-set of the sign
count, and the same session and tokens), with an ES256 (P-256) and an EdDSA (Ed25519) passkey;
and against a password login with the passkey as its second factor (the password step, which
now also lists the user's passkeys and issues an `mfaToken` and a challenge, raising
`TwoFactorCodeRequired`; then `login_with_mfa`). Also that second step alone, to show what is
the passkey's and what is the password's.

Only the server is timed: the assertion is signed by the test suite's software authenticator
(tests/authenticator.py) between the timed calls, so the client's ECDSA or Ed25519 signing is
left out. Each round logs in --logins times per kind, interleaved; medians over --rounds
rounds, as ratios against the baseline. Every login gets a fresh challenge (they are single
use) and the authenticator's sign count goes up by one each time. The injected clock stands
still, so no challenge, `mfaToken` or the registration's recent-login window lapses mid-run.

    python benchmarks/passkeys.py [--rounds 5] [--logins 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    EndpointHandler,
    EndpointRequest,
    KeyRing,
    RateLimits,
    SealingKeys,
    SigningKey,
    TokenConfig,
    TwoFactorCodeRequired,
)
from accounts_server.stores import SQLiteStore
from accounts_webauthn import WebAuthnService

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.authenticator import Alg, SoftAuthenticator  # the tests' own

PASSWORD = "correct horse battery staple"
ORIGIN = "http://localhost:3000"
INFO = ConnectionInfo(ip="192.0.2.1")
ALGS: tuple[Alg, ...] = ("ES256", "EdDSA")


def email(alg: Alg) -> str:
    return f"{alg.lower()}@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def params(address: str) -> dict[str, Any]:
    return {"user": {"email": address}, "password": PASSWORD}


def endpoint(service: WebAuthnService, path: str) -> EndpointHandler:
    return next(e.handler for e in service.endpoints() if e.path == path and e.method == "POST")


async def call(
    server: AccountsServer, handler: EndpointHandler, body: dict[str, Any], token: str | None = None
) -> Any:
    request = EndpointRequest(body=body, info=INFO, access_token=token)
    return await server.call_endpoint(handler, request)


async def enroll(
    server: AccountsServer, password: PasswordService, webauthn: WebAuthnService, alg: Alg
) -> SoftAuthenticator:
    """A user with a password and one passkey of `alg`, registered as a browser would: logged
    in, `register/options`, the authenticator's `create`, `register/verify`."""
    await password.create_user(server.context, email=email(alg), password=PASSWORD)
    token = (await server.login_with_service("password", params(email(alg)), INFO)).tokens
    authenticator = SoftAuthenticator(origin=ORIGIN, alg=alg)
    options = await call(server, endpoint(webauthn, "register/options"), {}, token.access_token)
    body = {"webauthn": authenticator.create(options), "name": "bench"}
    await call(server, endpoint(webauthn, "register/verify"), body, token.access_token)
    return authenticator


async def main(rounds: int, logins: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        password, webauthn = (
            PasswordService(),
            WebAuthnService(rp_id="localhost", rp_name="bench", origins=[ORIGIN]),
        )
        server = AccountsServer(
            store=SQLiteStore(Path(tmp) / "accounts.db"),
            tokens=TokenConfig(keys=KeyRing([SigningKey.generate()])),
            services=[password, webauthn],
            sealing=SealingKeys.generate(),
            rate_limits=RateLimits(enabled=False),
            clock=Clock(),
        )
        await password.create_user(server.context, email="plain@example.com", password=PASSWORD)
        authenticators = {alg: await enroll(server, password, webauthn, alg) for alg in ALGS}
        login_options = endpoint(webauthn, "login/options")

        async def password_login() -> float:
            start = time.perf_counter()
            await server.login_with_service("password", params("plain@example.com"), INFO)
            return time.perf_counter() - start

        async def passwordless(alg: Alg) -> float:
            start = time.perf_counter()
            options = await call(server, login_options, {})
            elapsed = time.perf_counter() - start
            assertion = authenticators[alg].get(options)
            start = time.perf_counter()
            await server.login_with_service("webauthn", {"webauthn": assertion}, INFO)
            return elapsed + time.perf_counter() - start

        async def second_factor(alg: Alg) -> tuple[float, float]:
            """(the whole two-step login, the second step alone)."""
            start = time.perf_counter()
            try:
                await server.login_with_service("password", params(email(alg)), INFO)
            except TwoFactorCodeRequired as required:
                first = time.perf_counter() - start
                token, options = required.mfa_token, required.challenges["webauthn"]
            else:
                raise AssertionError("the password step did not ask for the passkey")
            assertion = authenticators[alg].get(options)
            start = time.perf_counter()
            await server.login_with_mfa({"mfaToken": token, "webauthn": assertion}, INFO)
            second = time.perf_counter() - start
            return first + second, second

        names = ["password", *(f"passkey {a}" for a in ALGS)]
        names += [f"password+passkey {a}" for a in ALGS]
        names += [f"second step {a}" for a in ALGS]
        results: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            samples: dict[str, list[float]] = {name: [] for name in results}
            for _ in range(logins):
                samples["password"].append(await password_login())
                for alg in ALGS:
                    samples[f"passkey {alg}"].append(await passwordless(alg))
                    whole, second = await second_factor(alg)
                    samples[f"password+passkey {alg}"].append(whole)
                    samples[f"second step {alg}"].append(second)
            for name, values in samples.items():
                results[name].append(statistics.median(values))
        await server.close()

    report(rounds, logins, results)


def report(rounds: int, logins: int, results: dict[str, list[float]]) -> None:
    """The command, the machine, and the table (the results file is this output)."""
    print(f"$ python benchmarks/passkeys.py --rounds {rounds} --logins {logins}")
    print(
        f"# {os.cpu_count()} CPUs ({platform.machine()}), {platform.system()}, "
        f"Python {platform.python_version()}"
    )
    print()
    base = statistics.median(results["password"])
    print(f"{'login':<24}{'median ms':>10}{'x baseline':>12}")
    for name, medians in results.items():
        value = statistics.median(medians)
        print(f"{name:<24}{value * 1000:>10.2f}{value / base:>12.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--logins", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.logins))
