"""HTTP benchmark of accounts-server against accounts-js and against the bare Starlette ceiling,
plus the JWT verify against its raw primitive; every ratio is measured in the same run.

    python benchmarks/run.py [--store sqlite|mongo|postgres] [--algorithm HS256|EdDSA]
                             [--duration 5] [--rounds 3] [--routes register,login,...]
                             [--variants mounted,granian] [--json out.json]

`benchmarks/run.sh` installs what this needs (wrk, granian, the accounts-js peer from npm) and
runs it. Servers: accounts-server as `serve` builds it under uvicorn (every route), and two
variants on the routes that are not argon2's (`--variants`): the app mounted under a host
Starlette app, and the served app under granian instead of uvicorn; accounts-js; and the bare
Starlette ceiling under uvicorn and, with the granian variant, under granian (so granian's gain
is shown against its own ceiling). Each server is pinned to CPU 0 (the others stopped while it
runs) and wrk to CPU 1. A warm-up precedes interleaved rounds (every round runs every route on
every server); the table shows medians of req/s, p50 and p99, then every target of issue 17 on
one line each. Not part of the test suite: nothing here passes or fails a build.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from tests.helpers import (  # noqa: E402  (one way to run the wire server and PostgreSQL)
    PostgresServer,
    WireServer,
    free_port,
    postgres_unavailable,
    wire_server_unavailable,
)

PASSWORD = "correct horse battery staple"
ROUTES = ("register", "login", "GET /user", "refresh", "logout")
HASHING = {"register", "login"}  # argon2/bcrypt-bound: a few connections saturate the core
#: The variants beside the served app, and the routes they run: the hashing routes are
#: argon2's whatever serves them, so measuring them again would only lengthen the run.
VARIANTS = ("mounted", "granian")
VARIANT_ROUTES = ("GET /user", "refresh", "logout")
SERVED = "accounts-server"
PEER = "accounts-js"
BARE = "bare Starlette"
#: Each accounts-server target, and the bare ceiling on the same HTTP server.
CEILINGS = {
    SERVED: BARE,
    f"{SERVED} mounted": BARE,
    f"{SERVED} granian": f"{BARE} granian",
}
#: Issue 17: what "fast" means, checked (never asserted) against this run.
VS_PEER = {"register": 3.0, "login": 3.0, "GET /user": 3.0, "refresh": 2.0, "logout": 2.0}
VS_BARE = 0.7
VS_ARGON2 = 0.9
P99_OVER_P50 = 3.0
IDLE_RSS_TARGET_MIB = 60


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base: str
    tokens: Path
    #: What this server runs, in order: routes of ROUTES, or "GET /json" for a bare one.
    routes: tuple[str, ...]
    #: Sessions in `tokens` before this line are used up (logged out or rotated away).
    next_session: int = 1  # line 0 serves GET /user all run long
    samples: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def access_token(self) -> str:
        with self.tokens.open() as lines:
            return lines.readline().split()[0]


def wait_until_up(url: str, process: subprocess.Popen[bytes], name: str) -> None:
    """Until `url` answers (seeding takes a while); a process that exits or hangs is killed.

    Raises:
        RuntimeError: it never answered.
    """
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not start")


def start(
    name: str, command: Callable[[int], list[str]], tokens: Path, routes: tuple[str, ...]
) -> Server:
    """Start a server pinned to CPU 0 and wait until it answers. It leads a process group of
    its own, so a server of several processes (granian's supervisor and its worker, which
    inherits the affinity) is paused, measured and stopped as one."""
    port = free_port()
    process = subprocess.Popen(["taskset", "-c", "0", *command(port)], process_group=0)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/", process, name)
    except RuntimeError:
        kill_group(process.pid)
        raise
    return Server(name, process, base, tokens, routes)


@contextmanager
def alone(server: Server, everyone: tuple[Server, ...]) -> Iterator[None]:
    """The other servers share the pinned core: SIGSTOP them for the run, so an idle one's
    housekeeping (V8's garbage collector on a heap of seeded sessions) never lands in it.
    A short pause first lets requests still in flight from the last run finish, rather than
    freeze mid-query and time out against the store when resumed."""
    others = [s.process.pid for s in everyone if s is not server]
    time.sleep(0.5)
    for pgid in others:
        os.killpg(pgid, signal.SIGSTOP)  # the whole group: granian's worker does the work
    try:
        yield
    finally:
        for pgid in others:
            os.killpg(pgid, signal.SIGCONT)


def stop(server: Server) -> None:
    """SIGTERM to the server's leader (granian's supervisor stops its worker itself), then
    SIGKILL to whatever of its group is left, so no process outlives the run."""
    server.process.terminate()
    with suppress(subprocess.TimeoutExpired):  # then killed with the rest of its group
        server.process.wait(timeout=10)
    kill_group(server.process.pid)
    server.process.wait(timeout=10)


def kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):  # the group is gone: the usual case
        os.killpg(pgid, signal.SIGKILL)


def wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    headers: dict[str, str] | None = None,
    script: str | None = None,
    args: tuple[str, ...] = (),
) -> dict[str, float]:
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    command += ["--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", str(HERE / "wrk" / script)]
    done = subprocess.run([*command, url, "--", *args], capture_output=True, text=True, check=True)
    out = done.stdout
    if os.environ.get("WRK_DEBUG"):
        sys.stderr.write(done.stderr[:3000])

    def number(pattern: str) -> float:
        match = re.search(pattern, out, re.M)
        if not match:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return float(match.group(1))

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]

    failed = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*timeout (\d+)", out)
    if failed:
        raise RuntimeError(f"{url}: failed requests\n{out}")
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": number(r"(\d+) requests in"),
    }


def run_route(server: Server, route: str, *, duration: int, connections: int) -> dict[str, Any]:
    """One wrk run of `route` against `server`; session-consuming routes take fresh sessions."""
    base = f"{server.base}/accounts"
    if route == "GET /user":
        auth = {"Authorization": f"Bearer {server.access_token()}"}
        return wrk(f"{base}/user", duration=duration, connections=connections, headers=auth)
    if route == "register":
        prefix = f"u{secrets.token_hex(4)}x"
        return wrk(
            f"{base}/password/register",
            duration=duration,
            connections=connections,
            script="register.lua",
            args=(prefix, PASSWORD),
        )
    if route == "login":
        body = json.dumps({"user": {"username": "login"}, "password": PASSWORD})
        return wrk(
            f"{base}/password/authenticate",
            duration=duration,
            connections=connections,
            script="post.lua",
            args=(body,),
        )
    path = "refreshTokens" if route == "refresh" else "logout"
    # refresh: a pair per connection, and spares (wrk asks for one request more than it has
    # connections at start); logout: whatever is left.
    count = 2 * connections if route == "refresh" else 10**9
    result = wrk(
        f"{base}/{path}",
        duration=duration,
        connections=connections,
        script="sessions.lua",
        args=(route, str(server.tokens), str(server.next_session), str(count)),
    )
    used = count if route == "refresh" else int(result["requests"]) + connections
    server.next_session += used
    return result


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}


def argon2_ceiling() -> dict[str, float]:
    """Logins per second one core can hash: 1 / the CPU time of one verify with the password
    service's default parameters, measured pinned to the servers' core."""
    code = (
        "import time, argon2\n"
        "from accounts_password.hashing import PasswordHasher as P\n"
        "p = P(); h = argon2.PasswordHasher(memory_cost=p.memory_cost, time_cost=p.time_cost,"
        " parallelism=p.parallelism)\n"
        "digest = h.hash('correct horse battery staple')\n"
        "start = time.process_time()\n"
        "for _ in range(30): h.verify(digest, 'correct horse battery staple')\n"
        "print((time.process_time() - start) / 30)\n"
    )
    seconds = float(
        subprocess.run(
            ["taskset", "-c", "0", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return {"verify_ms": seconds * 1000, "logins_per_s": 1 / seconds}


def idle_rss_of_serve() -> float:
    """MiB resident of `accounts-server serve` (the CLI, embedded default) once it answers."""
    cli = shutil.which("accounts-server") or str(Path(sys.executable).parent / "accounts-server")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        process = subprocess.Popen(
            [cli, "serve", "--port", str(port), "--db", f"{tmp}/accounts.db"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            health = f"http://127.0.0.1:{port}/accounts/health"
            wait_until_up(health, process, "accounts-server serve")
            time.sleep(1)
            return rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=10)


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def group_rss_mib(pgid: int) -> tuple[float, int]:
    """(MiB resident summed over the processes of group `pgid`, how many there are): a
    granian server is its supervisor plus the worker that holds the app, so both count (pages
    shared since the fork are counted twice, as `ps` would)."""
    total, count = 0.0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp
                total += rss_mib(int(stat.parent.name))
                count += 1
        except (OSError, AttributeError):
            continue  # exited while we looked, or a kernel thread without VmRSS
    return total, count


def jwt_micro(algorithm: str, n: int = 20000) -> dict[str, float]:
    """µs per verify: TokenCodec.verify_access vs the bare signature check it wraps."""
    import hashlib
    import hmac
    from datetime import UTC, datetime, timedelta

    import jwt
    import nacl.bindings

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
    signing_input, _, encoded_signature = token.rpartition(".")
    signature = jwt.utils.base64url_decode(encoded_signature)

    message = signing_input.encode()

    def primitive() -> None:
        if algorithm == "HS256":
            mac = hmac.new(key.signer, message, hashlib.sha256).digest()
            hmac.compare_digest(mac, signature)
        else:  # libsodium, which TokenCodec uses for Ed25519
            nacl.bindings.crypto_sign_open(signature + message, key.verifier.public_bytes_raw())

    def openssl() -> None:  # what PyJWT (and TokenCodec before libsodium) verifies with
        key.verifier.verify(signature, message)

    def timed(fn: Any) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6

    ours = statistics.median(timed(lambda: codec.verify_access(token)) for _ in range(5))
    raw = statistics.median(timed(primitive) for _ in range(5))
    hit = statistics.median(timed(lambda: cached.verify_access(token)) for _ in range(5))
    found = {"verify_us": ours, "primitive_us": raw, "ratio": ours / raw, "cache_hit_us": hit}
    if algorithm == "EdDSA":
        found["openssl_primitive_us"] = statistics.median(timed(openssl) for _ in range(5))
    return found


@contextmanager
def database(store: str, tmp: Path) -> Iterator[tuple[str, str | None]]:
    """(our store location, the peer's MongoDB URL or None for its in-memory database)."""
    if store == "sqlite":
        yield str(tmp / "bench.db"), None
        return
    if store == "postgres":  # the peer keeps its in-memory database, as on SQLite
        if found := os.environ.get("POSTGRES_URL"):
            yield found, None
            return
        cluster = PostgresServer.start(tmp)
        try:
            yield cluster.url, None
        finally:
            cluster.stop()
        return
    url = os.environ.get("MONGODB_URL")
    if url:
        yield url, url
        return
    wire = WireServer.start()
    try:
        yield wire.url, wire.url
    finally:
        wire.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "mongo", "postgres"], default="sqlite")
    parser.add_argument("--algorithm", choices=["HS256", "EdDSA"], default="HS256")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--connections", type=int, help="50; 10 on MongoDB, where the wire server is the limit"
    )
    parser.add_argument("--hash-connections", type=int, default=4)
    parser.add_argument("--sessions", type=int, help="sessions seeded per server")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="which of mounted,granian run beside the served app (GET /user, refresh, logout "
        "only); empty for none",
    )
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def measure_http(args: argparse.Namespace, routes: list[str]) -> dict[str, Any]:
    """Start the servers, warm up, run the interleaved rounds; medians per route."""
    # Logout uses a session per request: enough for the fastest plausible run (SQLite runs
    # use about 60 % of theirs; on MongoDB 5,000 ran out at ~260 logouts/s by the third round).
    sessions = str(args.sessions or (10_000 if args.store == "mongo" else 100_000))
    variant_routes = tuple(r for r in routes if r in VARIANT_ROUTES)
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        ours_at, peer_mongo = stack.enter_context(database(args.store, tmp))
        python = [sys.executable, str(HERE / "servers.py")]
        servers: list[Server] = []

        def add(
            name: str, command: Callable[[int], list[str]], tokens: Path, runs: tuple[str, ...]
        ) -> Server:
            server = start(name, command, tokens, runs)
            stack.callback(stop, server)
            servers.append(server)
            return server

        def ours(name: str, flags: list[str], kind: str, runs: tuple[str, ...]) -> Server:
            """An accounts-server target on a store of its own (its own SQLite file, or its
            own database on MongoDB), seeded with its own sessions."""
            slug = name.replace(" ", "-")
            # SQLite: a file each; MongoDB: a database each; PostgreSQL: a schema each.
            at = str(tmp / f"{slug}.db") if args.store == "sqlite" else ours_at
            tokens = tmp / f"{slug}.tokens"
            rest = [at, args.algorithm, str(tokens), sessions]
            return add(name, lambda port: [*python, *flags, kind, str(port), *rest], tokens, runs)

        served = ours(SERVED, [], "accounts", tuple(routes))
        if "mounted" in args.variants:
            ours(f"{SERVED} mounted", [], "mounted", variant_routes)
        if "granian" in args.variants:
            ours(f"{SERVED} granian", ["--granian"], "accounts", variant_routes)
        peer_tokens = tmp / "peer.tokens"
        peer_args = [str(peer_tokens), sessions, *([peer_mongo] if peer_mongo else [])]
        peer_script = str(HERE / "peer" / "server.mjs")
        peer = add(
            PEER,
            lambda port: ["node", peer_script, str(port), *peer_args],
            peer_tokens,
            tuple(routes),
        )
        no_sessions = tmp / "none"
        add(BARE, lambda port: [*python, "bare", str(port)], no_sessions, ("GET /json",))
        if "granian" in args.variants:
            add(
                f"{BARE} granian",
                lambda port: [*python, "--granian", "bare", str(port)],
                no_sessions,
                ("GET /json",),
            )
        for server in (served, peer):
            httpx.post(
                f"{server.base}/accounts/password/register",
                json={"user": {"username": "login", "password": PASSWORD}},
                timeout=30,
            ).raise_for_status()
        everyone = tuple(servers)

        def once(server: Server, route: str, duration: int) -> dict[str, float]:
            with alone(server, everyone):
                if route == "GET /json":
                    url = f"{server.base}/json"
                    return wrk(url, duration=duration, connections=args.connections)
                hashing = route in HASHING
                connections = args.hash_connections if hashing else args.connections
                return run_route(server, route, duration=duration, connections=connections)

        plan = [
            (server, route)
            for route in (*ROUTES, "GET /json")
            for server in servers
            if route in server.routes
        ]
        for server, route in plan:
            once(server, route, args.warmup)
        for _ in range(args.rounds):
            for server, route in plan:
                server.samples.setdefault(route, []).append(once(server, route, args.duration))
        rss = {s.name: group_rss_mib(s.process.pid) for s in servers}
    return {
        "http": {s.name: {r: medians(runs) for r, runs in s.samples.items()} for s in servers},
        "rss_after_load_mib": {name: mib for name, (mib, _) in rss.items()},
        "processes_after_load": {name: count for name, (_, count) in rss.items()},
        # Of the seeded sessions: how close logout came to running out (it would fail).
        "sessions_used": {
            s.name: f"{s.next_session} of {sessions}" for s in servers if s.tokens != no_sessions
        },
    }


def check(name: str, value: float, target: float, compare: str = ">=") -> dict[str, Any]:
    """One target of issue 17: `compare` says on which side of `target` the value must be."""
    met = value >= target if compare == ">=" else value <= target
    return {"name": name, "value": value, "target": target, "compare": compare, "met": met}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 17 this run measured, for the served app and each variant; a
    target is named by its server, so a variant's gap never hides behind the served one's."""
    table, found = results["http"], []
    theirs = table.get(PEER, {})
    for name, ceiling in CEILINGS.items():
        mine = table.get(name, {})
        for route, times in VS_PEER.items():
            if route in mine and route in theirs:
                ratio = mine[route]["rps"] / theirs[route]["rps"]
                found.append(check(f"{name}: {route} vs {PEER}", ratio, times))
        if "GET /user" in mine:
            user = mine["GET /user"]
            # Against the bare app on the same HTTP server and, for granian, on uvicorn too:
            # the first isolates our own cost, the second says what changing servers buys.
            for bare in dict.fromkeys((ceiling, BARE)):
                ratio = user["rps"] / table[bare]["GET /json"]["rps"]
                found.append(check(f"{name}: GET /user vs {bare}", ratio, VS_BARE))
            spread = user["p99_ms"] / user["p50_ms"]
            label = f"{name}: GET /user p99 / p50 at {results['connections']} connections"
            found.append(check(label, spread, P99_OVER_P50, "<="))
        if "login" in mine:
            ratio = mine["login"]["rps"] / results["argon2_ceiling"]["logins_per_s"]
            found.append(check(f"{name}: login vs argon2 ceiling", ratio, VS_ARGON2))
    rss = results["idle_rss_serve_mib"]
    found.append(check("idle RSS of `accounts-server serve`, MiB", rss, IDLE_RSS_TARGET_MIB, "<="))
    return found


def context(results: dict[str, Any]) -> dict[str, float]:
    """Ratios that are no target but say where a target's gap comes from: the bare ceilings'
    own tail, granian's gain on the bare app, and what each variant costs or saves."""
    table, found = results["http"], {}
    for bare in (BARE, f"{BARE} granian"):
        if bare in table:
            row = table[bare]["GET /json"]
            found[f"{bare}: p99 / p50"] = row["p99_ms"] / row["p50_ms"]
    if f"{BARE} granian" in table:
        found[f"{BARE} granian vs {BARE}"] = (
            table[f"{BARE} granian"]["GET /json"]["rps"] / table[BARE]["GET /json"]["rps"]
        )
    for variant in (f"{SERVED} mounted", f"{SERVED} granian"):
        for route, row in table.get(variant, {}).items():
            if route in table[SERVED]:
                served = table[SERVED][route]["rps"]
                found[f"{variant}: {route} vs {SERVED}"] = row["rps"] / served
    return found


def main() -> None:
    args = parse_args()
    args.connections = args.connections or (10 if args.store == "mongo" else 50)
    # A SIGTERM unwinds like Ctrl-C, so every server and the wire server are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for tool in ("wrk", "taskset", "node"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: run benchmarks/run.sh, which installs what it can")
    if not (HERE / "peer" / "node_modules").exists():
        sys.exit("the accounts-js peer is not installed: npm ci --prefix benchmarks/peer")
    routes = [r for r in ROUTES if r in args.routes.split(",")]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown --variants {', '.join(sorted(unknown))}: of {', '.join(VARIANTS)}")
    if "granian" in args.variants and importlib.util.find_spec("granian") is None:
        sys.exit("the granian variant needs granian: run benchmarks/run.sh, or pip install granian")
    if args.store == "mongo" and not os.environ.get("MONGODB_URL"):
        reason = wire_server_unavailable()
        if reason:  # said, never silently skipped; the SQLite runs stand on their own
            print(f"MongoDB run skipped: {reason}; set MONGODB_URL to use a mongod instead")
            return
    if args.store == "postgres" and not os.environ.get("POSTGRES_URL"):
        reason = postgres_unavailable()
        if reason:  # said, never silently skipped
            print(f"PostgreSQL run skipped: {reason}; set POSTGRES_URL to use a server instead")
            return
    store = {
        "sqlite": "sqlite",
        "mongo": "mongo (the MongoDB-wire test server, in memory)",
        "postgres": "postgres (a throwaway local cluster, fsync off) unless POSTGRES_URL",
    }[args.store]
    results: dict[str, Any] = {
        "store": store,
        "algorithm": args.algorithm,
        "connections": args.connections,
        "hash_connections": args.hash_connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "variants": args.variants,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "node": subprocess.check_output(["node", "--version"], text=True).strip(),
            "uvicorn": importlib.metadata.version("uvicorn"),
            **(
                {"granian": importlib.metadata.version("granian")}
                if "granian" in args.variants
                else {}
            ),
        },
        **measure_http(args, routes),
        "argon2_ceiling": argon2_ceiling(),
        "idle_rss_serve_mib": idle_rss_of_serve(),
        "jwt": {alg: jwt_micro(alg) for alg in ("HS256", "EdDSA")},
    }
    results["targets"] = targets(results)
    results["context"] = context(results)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(results: dict[str, Any]) -> None:
    print(
        f"\nstore: {results['store']}; accounts-server signs with {results['algorithm']}; "
        f"accounts-js with HS256 (jsonwebtoken 8 has no EdDSA); "
        f"{results['rounds']} rounds of {results['duration_s']} s, medians"
    )
    width = max(len(name) for name in results["http"])
    print(f"{'route':10s} {'server':{width}s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for route in (*ROUTES, "GET /json"):
        for name, rows in results["http"].items():
            if route in rows:
                rps, p50, p99 = (rows[route][k] for k in ("rps", "p50_ms", "p99_ms"))
                print(f"{route:10s} {name:{width}s} {rps:9.0f} {p50:8.2f} {p99:8.2f}")
    ceiling = results["argon2_ceiling"]
    print(
        f"\nargon2id verify: {ceiling['verify_ms']:.1f} ms CPU -> ceiling "
        f"{ceiling['logins_per_s']:.1f} logins/s on one core"
    )
    print(f"idle RSS of `accounts-server serve`: {results['idle_rss_serve_mib']:.1f} MiB")
    for name, mib in results["rss_after_load_mib"].items():
        count = results["processes_after_load"][name]
        processes = f" ({count} processes)" if count > 1 else ""
        print(f"RSS after the run, {name}: {mib:.1f} MiB{processes}")
    used = ", ".join(f"{name} {count}" for name, count in results["sessions_used"].items())
    print(f"sessions used: {used}")
    for alg, row in results["jwt"].items():
        ours, raw, hit = row["verify_us"], row["primitive_us"], row["cache_hit_us"]
        print(
            f"JWT verify {alg}: {ours:.1f} µs vs primitive {raw:.1f} µs ({ours / raw:.1f}x);"
            f" a verified token again (cache hit): {hit:.2f} µs"
        )
        if "openssl_primitive_us" in row:
            openssl = row["openssl_primitive_us"]
            print(f"  Ed25519 verify: libsodium {raw:.1f} µs, OpenSSL {openssl:.1f} µs")
    print("\ntargets (issue 17):")
    width = max(len(row["name"]) for row in results["targets"])
    for row in results["targets"]:
        mib = row["name"].endswith("MiB")
        unit = " MiB" if mib else "x"
        value = f"{row['value']:.1f}{unit}" if mib else f"{row['value']:.2f}{unit}"
        target = f"{row['compare']} {row['target']:g}{unit}"
        verdict = "met" if row["met"] else "MISSED"
        print(f"  {row['name']:{width}s} {value:>9s}  {target:9s}  {verdict}")
    print("context:")
    width = max((len(name) for name in results["context"]), default=0)
    for name, ratio in results["context"].items():
        print(f"  {name:{width}s} {ratio:8.2f}x")


if __name__ == "__main__":
    main()
