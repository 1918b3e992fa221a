"""HTTP benchmark: accounts-server GET /user against a bare Starlette JSON endpoint, and the JWT
verify against its raw primitive — ratios measured in the same run.

    python benchmarks/run.py [--duration 5] [--rounds 3] [--connections 50] [--json out.json]

Needs wrk (apt-get install wrk) and taskset (util-linux). Each server is pinned to CPU 0 and wrk
to CPU 1; a warm-up precedes interleaved rounds; the table shows medians of req/s, p50, p99.
Not part of the test suite: nothing here passes or fails a build.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = ["taskset", "-c", "0", sys.executable, str(HERE / "servers.py"), args[0], str(port)]
    process = subprocess.Popen([*command, *args[1:]])
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(base + "/", timeout=0.5)
            return process, base
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{args[0]} server did not start")


def wrk(url: str, *, duration: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    command = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
        return float(match.group(1)) * scale

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": latency("50"), "p99_ms": latency("99")}


def jwt_micro(algorithm: str, n: int = 20000) -> dict[str, float]:
    """µs per verify: TokenCodec.verify_access vs the bare signature check it wraps."""
    import hashlib
    import hmac
    import secrets
    from datetime import UTC, datetime, timedelta

    from accounts_server import KeyRing, SigningKey, TokenConfig
    from accounts_server.tokens import TokenCodec

    key = (
        SigningKey.from_secret(secrets.token_bytes(32))
        if algorithm == "HS256"
        else SigningKey.generate("EdDSA")
    )
    codec = TokenCodec(TokenConfig(keys=KeyRing([key])), cache_size=0)  # every verify cold
    cached = TokenCodec(TokenConfig(keys=KeyRing([key])))
    now = datetime.now(UTC)
    token = codec.issue_access(
        subject="u",
        session_id="s",
        jti="j" * 22,
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
    )
    signing_input, _, _ = token.rpartition(".")
    signature = __import__("jwt").utils.base64url_decode(token.rpartition(".")[2])

    def primitive() -> None:
        if algorithm == "HS256":
            mac = hmac.new(key.signer, signing_input.encode(), hashlib.sha256).digest()
            hmac.compare_digest(mac, signature)
        else:
            key.verifier.verify(signature, signing_input.encode())

    def timed(fn: Any) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6

    ours = statistics.median(timed(lambda: codec.verify_access(token)) for _ in range(5))
    raw = statistics.median(timed(primitive) for _ in range(5))
    hit = statistics.median(timed(lambda: cached.verify_access(token)) for _ in range(5))
    return {"verify_us": ours, "primitive_us": raw, "ratio": ours / raw, "cache_hit_us": hit}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--algorithm", choices=["HS256", "EdDSA"], default="HS256")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install wrk util-linux")

    results: dict[str, Any] = {"algorithm": args.algorithm, "connections": args.connections}
    with tempfile.TemporaryDirectory() as tmp:
        accounts, accounts_url = start("accounts", str(Path(tmp) / "bench.db"), args.algorithm)
        bare, bare_url = start("bare")
        try:
            user = {"username": "bench", "password": PASSWORD}
            httpx.post(f"{accounts_url}/accounts/password/register", json={"user": user})
            login = httpx.post(
                f"{accounts_url}/accounts/password/authenticate",
                json={"user": "bench", "password": PASSWORD},
            ).json()
            auth = {"Authorization": f"Bearer {login['tokens']['accessToken']}"}
            targets = {
                "accounts GET /user": (f"{accounts_url}/accounts/user", auth),
                "bare Starlette JSON": (f"{bare_url}/json", {}),
            }
            for url, headers in targets.values():  # warm-up
                wrk(url, duration=2, connections=args.connections, headers=headers)
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (url, headers) in targets.items():
                    samples[name].append(
                        wrk(
                            url,
                            duration=args.duration,
                            connections=args.connections,
                            headers=headers,
                        )
                    )
        finally:
            for process in (accounts, bare):
                process.terminate()
                process.wait(timeout=10)

    table = {
        name: {k: statistics.median(s[k] for s in runs) for k in ("rps", "p50_ms", "p99_ms")}
        for name, runs in samples.items()
    }
    results["http"] = table
    user_rps = table["accounts GET /user"]["rps"]
    results["ratios"] = {
        "GET /user vs bare Starlette": user_rps / table["bare Starlette JSON"]["rps"]
    }
    results["jwt"] = {alg: jwt_micro(alg) for alg in ("HS256", "EdDSA")}

    print(f"{'target':28s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, row in table.items():
        print(f"{name:28s} {row['rps']:10.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f}")
    for name, ratio in results["ratios"].items():
        print(f"{name}: {ratio:.2f}x")
    for alg, row in results["jwt"].items():
        ours, raw, ratio = row["verify_us"], row["primitive_us"], row["ratio"]
        print(f"JWT verify {alg}: {ours:.1f} µs vs primitive {raw:.1f} µs ({ratio:.1f}x);")
        print(f"  a repeat of a verified token (cache hit): {row['cache_hit_us']:.2f} µs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
