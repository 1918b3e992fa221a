"""`accounts-server serve` for real: a uvicorn process on 127.0.0.1, driven over TCP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyotp
import pytest

from ..helpers import PASSWORD, WireServer, free_port, stop_process, wire_server_unavailable

CLI = [sys.executable, "-m", "accounts_server.cli"]


@contextmanager
def serving(workdir: Path, *args: str) -> Iterator[httpx.Client]:
    """Run the CLI in `workdir`; stop it by its PID however the test ends."""
    with (
        started(workdir, *args) as (_, base),
        httpx.Client(base_url=f"{base}/accounts", timeout=10) as client,
    ):
        yield client


@contextmanager
def started(
    workdir: Path, *args: str, healthy: bool = True
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`serve` up and answering (`/health` 200, or any answer when not `healthy`): its process
    and base URL; stopped by its PID at the end."""
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--log-level", "warning", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"server exited early:\n{output}")
            try:
                status = httpx.get(f"{base}/accounts/health", timeout=5).status_code
                if status == 200 or not healthy:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not start within 20 s")
            time.sleep(0.1)
        yield process, base
    finally:
        stop_process(process)
        if process.stdout:
            process.stdout.close()


def test_readme_flow_then_tokens_survive_a_restart(tmp_path: Path) -> None:
    with serving(tmp_path) as api:
        created = api.post(
            "/password/register",
            json={
                "user": {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
            },
        )
        assert created.status_code == 200, created.text
        login = api.post(
            "/password/authenticate",
            json={"user": {"email": "alice@example.com"}, "password": PASSWORD},
        )
        tokens = login.json()["tokens"]
        auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
        assert api.get("/user", headers=auth).json()["username"] == "alice"
        refreshed = api.post("/refreshTokens", json=tokens).json()["tokens"]
        assert refreshed["refreshToken"] != tokens["refreshToken"]
        assert "server" not in {k.lower() for k in login.headers}
        secret = api.post("/password/twoFactorSecret").json()["secret"]
        totp = pyotp.TOTP(secret["base32"])
        auth = {"Authorization": f"Bearer {refreshed['accessToken']}"}
        body = {"secret": secret, "code": totp.now()}
        assert api.post("/password/twoFactorSet", json=body, headers=auth).status_code == 200

    assert (tmp_path / "accounts.db").exists()
    for name in ("accounts.key", "accounts.sealing.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600

    with serving(tmp_path) as api:
        auth = {"Authorization": f"Bearer {refreshed['accessToken']}"}
        assert api.get("/user", headers=auth).json()["username"] == "alice"
        # The sealing key outlived the process, so the second factor did too.
        credentials = {"user": "alice", "password": PASSWORD}
        assert api.post("/password/authenticate", json=credentials).status_code == 401
        code = totp.at(time.time(), counter_offset=1)  # a later step than the enabling code
        again = api.post("/password/authenticate", json={**credentials, "code": code})
        assert again.status_code == 200, again.text
        assert api.post("/logout", headers=auth).json() is None
        assert api.get("/user", headers=auth).json() is None


def test_key_rotation_through_the_cli(tmp_path: Path) -> None:
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    for path in (old, new):
        subprocess.run([*CLI, "keys", "generate", str(path)], check=True, capture_output=True)
        assert path.stat().st_mode & 0o777 == 0o600
    again = subprocess.run([*CLI, "keys", "generate", str(old)], capture_output=True, text=True)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr

    with serving(tmp_path, "--key", str(old)) as api:
        api.post("/password/register", json={"user": {"username": "bob", "password": PASSWORD}})
        tokens = api.post(
            "/password/authenticate", json={"user": "bob", "password": PASSWORD}
        ).json()["tokens"]
    with serving(tmp_path, "--key", str(new), "--key", str(old)) as api:
        auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
        assert api.get("/user", headers=auth).json()["username"] == "bob"
        assert len(api.get("/.well-known/jwks.json").json()["keys"]) == 2
    with serving(tmp_path, "--key", str(new)) as api:
        auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
        assert api.get("/user", headers=auth).json() is None


def test_serve_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    key = tmp_path / "accounts.key"
    subprocess.run([*CLI, "keys", "generate", str(key)], check=True, capture_output=True)
    key.chmod(0o644)
    result = subprocess.run(
        [*CLI, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "chmod 600" in result.stderr


def test_serve_refuses_an_unknown_service(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--service", "ldap"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "not installed: ldap" in result.stderr


def _serve_and_use(tmp_path: Path, url: str) -> None:
    db = f"serve_{uuid.uuid4().hex}"
    with serving(tmp_path, "--mongodb-url", url, "--mongodb-db", db) as api:
        user = {"username": "mona", "email": "mona@example.com", "password": PASSWORD}
        assert api.post("/password/register", json={"user": user}).status_code == 200
        login = api.post("/password/authenticate", json={"user": "mona", "password": PASSWORD})
        tokens = login.json()["tokens"]
        auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
        assert api.get("/user", headers=auth).json()["username"] == "mona"
        again = api.post("/password/register", json={"user": user})
        assert again.status_code == 409
        assert api.post("/refreshTokens", json=tokens).status_code == 200
        assert api.post("/logout", headers=auth).status_code == 200
        assert api.get("/user", headers=auth).json() is None
    assert not (tmp_path / "accounts.db").exists()


def test_serve_on_mongodb(tmp_path: Path, mongodb_url: str) -> None:
    _serve_and_use(tmp_path, mongodb_url)


def test_serve_on_a_replica_set_url(tmp_path: Path) -> None:
    """What production uses: `replicaSet=` (the driver discovers the members and follows the
    primary) and retryable writes. The wire server plays a one-member replica set."""
    reason = wire_server_unavailable()
    if reason:
        pytest.skip(f"replica-set test skipped: {reason}")
    wire = WireServer.start(replica_set="rs0")
    try:
        assert "replicaSet=rs0&retryWrites=true" in wire.url
        _serve_and_use(tmp_path, wire.url)
    finally:
        wire.stop()


def _output(process: subprocess.Popen[bytes]) -> str:
    return process.stdout.read().decode() if process.stdout else ""


def test_sigterm_is_a_clean_exit_even_with_a_client_stalled_mid_body(tmp_path: Path) -> None:
    """Issue 14 #8: exit status 0 after a graceful stop (uvicorn re-raised SIGTERM: -15), and
    a client that stopped sending its body does not hold the process past --graceful-timeout."""
    with started(tmp_path, "--graceful-timeout", "1") as (process, base):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(
                b"POST /accounts/password/authenticate HTTP/1.1\r\nHost: t\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user"'
            )
            assert httpx.get(f"{base}/accounts/health").status_code == 200
            os.kill(process.pid, signal.SIGTERM)
            try:
                status = process.wait(timeout=30)  # a bound on a hang, not a timing assertion
            except subprocess.TimeoutExpired:
                pytest.fail("serve kept running with a stalled client after SIGTERM")
        assert status == 0, _output(process)


def test_store_errors_are_one_formatted_log_line(tmp_path: Path) -> None:
    """Issue 14 #10: a MongoDB outage is logged through our configured loggers, one line in
    uvicorn's format, not Python's last-resort handler with a topology dump; and `serve`
    starts anyway, answering 503 until the database is back."""
    dead = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300"
    with started(tmp_path, "--mongodb-url", dead, healthy=False) as (process, base):
        assert httpx.get(f"{base}/accounts/health", timeout=5).status_code == 503
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        lines = [line for line in _output(process).splitlines() if "MongoDB unavailable" in line]
    assert lines, "no log line about the outage"
    for line in lines:
        assert line.startswith("WARNING:"), line
        assert len(line) < 300 and "Topology" not in line, line


def _workers(pid: int) -> list[int]:
    """The worker processes of a `serve --workers` parent (not multiprocessing's tracker)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    children = [int(line) for line in found.stdout.split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_workers_share_sessions_revocation_and_the_refresh_cas(tmp_path: Path) -> None:
    """`serve --workers 2`: two processes on one SQLite file. A logout in one holds in the
    other on its next request (its read cache is stamped by the file), and of concurrent
    refreshes with one token, across both, exactly one wins."""
    workers_share_one_database(tmp_path)


def workers_share_one_database(tmp_path: Path, *database: str) -> None:
    """The workers test on the database `database` names (default: the SQLite file)."""
    with started(tmp_path, "--workers", "2", "--reuse-grace", "0", *database) as (
        process,
        base,
    ):
        workers = _workers(process.pid)
        assert len(workers) == 2

        def fresh() -> httpx.Client:  # a new connection: the kernel picks the worker
            return httpx.Client(base_url=f"{base}/accounts", timeout=10)

        user = {"username": "wanda", "email": "wanda@example.com", "password": PASSWORD}
        with fresh() as api:
            assert api.post("/password/register", json={"user": user}).status_code == 200
        credentials = {"user": {"username": "wanda"}, "password": PASSWORD}

        def login() -> dict[str, str]:
            with fresh() as api:
                tokens: dict[str, str] = api.post(
                    "/password/authenticate", json=credentials
                ).json()["tokens"]
                return tokens

        tokens = login()
        auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
        for _ in range(20):  # both workers read (and cache) the session
            with fresh() as api:
                assert api.get("/user", headers=auth).json()["username"] == "wanda"
        with fresh() as api:
            assert api.post("/logout", headers=auth).status_code == 200
        for _ in range(20):
            with fresh() as api:
                assert api.get("/user", headers=auth).json() is None

        tokens = login()
        body = {"accessToken": tokens["accessToken"], "refreshToken": tokens["refreshToken"]}

        def refresh() -> int:
            with fresh() as api:
                return api.post("/refreshTokens", json=body).status_code

        with ThreadPoolExecutor(max_workers=10) as pool:
            statuses = list(pool.map(lambda _: refresh(), range(10)))
        assert sorted(statuses) == [200] + [401] * 9

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0  # after joining its workers
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
