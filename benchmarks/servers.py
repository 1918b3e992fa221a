"""The Python servers the HTTP benchmark starts (one process each, pinned by the caller).

    python benchmarks/servers.py [--granian] accounts|mounted PORT STORE ALG TOKENS SESSIONS
    python benchmarks/servers.py [--granian] bare PORT

`accounts`: accounts-server with the password service on STORE (a SQLite file path, or a
mongodb:// URL), signing with HS256 or EdDSA. Before it serves, it opens SESSIONS sessions for
the user `bench` and writes one "accessToken refreshToken" line per session to TOKENS, for the
refresh and logout runs (each refresh or logout uses a session up).
`mounted`: the same, mounted under a host Starlette app (the README's way).
`bare`: a bare Starlette JSON endpoint, the ceiling for any route of this stack.

By default every one runs under the same uvicorn configuration (uvloop, httptools, no access
log). `--granian` serves the same app with granian instead (one worker process under granian's
supervisor, one runtime thread, uvloop, HTTP/1 only, no websockets, no access log): this process
execs granian, whose worker builds the app with `from_env` from the arguments this process puts
in `BENCH_SERVER`, so both servers run the very same builder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    KeyRing,
    RateLimits,
    SigningKey,
    TokenConfig,
)
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore, Store


def _store(location: str) -> Store:
    if location.startswith("postgresql://"):
        from accounts_server.stores.postgres import PostgresStore

        return PostgresStore(location, schema=f"bench_{secrets.token_hex(4)}")
    if location.startswith("mongodb://"):
        from accounts_server.stores.mongo import MongoStore

        return MongoStore.from_url(location, f"bench_{secrets.token_hex(4)}")
    return SQLiteStore(location)


def _server(location: str, algorithm: str) -> AccountsServer:
    key = (
        SigningKey.from_secret(secrets.token_bytes(32))
        if algorithm == "HS256"
        else SigningKey.generate("EdDSA")
    )
    return AccountsServer(
        store=_store(location),
        tokens=TokenConfig(keys=KeyRing([key])),
        services=[PasswordService()],
        # The load generator is one client address; per-IP limits would measure 429s.
        rate_limits=RateLimits(enabled=False),
    )


async def _seed(server: AccountsServer, tokens: Path, sessions: int) -> None:
    user = await server.create_user(username="bench")
    info = ConnectionInfo(ip="127.0.0.1", user_agent="bench")
    lines = []
    for _ in range(sessions):
        pair = (await server.login_with_user(user, info)).tokens
        lines.append(f"{pair.access_token} {pair.refresh_token}\n")
    tokens.write_text("".join(lines))  # noqa: ASYNC240 (once, before serving)


def accounts(location: str, algorithm: str, tokens: Path, sessions: int) -> Any:
    """`create_app(server)` as `serve` runs it."""
    server = _server(location, algorithm)
    app = create_app(server)
    serve = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with serve(app):
            await _seed(server, tokens, sessions)
            yield

    app.router.lifespan_context = lifespan
    return app


def mounted(location: str, algorithm: str, tokens: Path, sessions: int) -> Any:
    """Mounted in a host Starlette app as the README shows (`Mount("/accounts",
    create_app(server, prefix=""))`); a mounted app's lifespan does not run, so the host's
    sets the store up."""
    server = _server(location, algorithm)

    async def home(request: Request) -> JSONResponse:
        return JSONResponse({"host": True})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.store.setup()
        try:
            await _seed(server, tokens, sessions)
            yield
        finally:
            await server.close()

    return Starlette(
        routes=[Route("/", home), Mount("/accounts", app=create_app(server, prefix=""))],
        lifespan=lifespan,
    )


def bare() -> Any:
    """One JSON route on plain Starlette, the size of `GET /user`'s answer: what the server
    and framework cost per request with no work of ours, so the ceiling for any route."""

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"id": "0123456789abcdef01234567", "username": "bench"})

    return Starlette(routes=[Route("/json", hello)])


def build(kind: str, args: list[str]) -> Any:
    """The app `kind` names, from the command line's arguments after PORT."""
    if kind in ("accounts", "mounted"):
        location, algorithm, tokens, sessions = args
        builder = accounts if kind == "accounts" else mounted
        return builder(location, algorithm, Path(tokens), int(sessions))
    if kind == "bare":
        return bare()
    raise SystemExit(f"unknown server {kind!r}: accounts, mounted or bare")


def from_env() -> Any:
    """The factory granian's worker calls (`granian --factory servers:from_env`): the app is
    built in the worker, after the fork, from `BENCH_SERVER` (a JSON list: KIND, then the
    arguments after PORT), since granian passes no arguments of its own to an app."""
    kind, *args = json.loads(os.environ["BENCH_SERVER"])
    return build(kind, args)


def granian(kind: str, port: int, args: list[str]) -> None:
    """Replace this process with granian serving `from_env`: exec, not a child, so the caller's
    pid is granian's supervisor (its worker is its child in the same process group), and the
    CPU affinity set by `taskset` is the supervisor's and so the worker's."""
    os.environ["BENCH_SERVER"] = json.dumps([kind, *args])
    executable = shutil.which("granian", path=str(Path(sys.executable).parent)) or shutil.which(
        "granian"
    )
    if executable is None:
        raise SystemExit("granian is needed for --granian: pip install granian")
    command = [executable, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    # One worker on one thread: the pinned core is the whole budget, as for uvicorn. HTTP/1
    # only (uvicorn's httptools speaks nothing else), so no per-connection protocol sniffing.
    command += ["--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--http", "1"]
    command += ["--no-ws", "--no-access-log", "--log-level", "warning"]
    command += ["--working-dir", str(Path(__file__).parent), "--factory", "servers:from_env"]
    os.execv(executable, command)  # noqa: S606 (a fixed argument list, no shell wanted)


def main() -> None:
    argv = sys.argv[1:]
    under_granian = argv[:1] == ["--granian"]
    if under_granian:
        argv = argv[1:]
    kind, port, args = argv[0], int(argv[1]), argv[2:]
    if under_granian:
        granian(kind, port, args)
        return
    uvicorn.run(
        build(kind, args),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
