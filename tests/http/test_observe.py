"""What a request leaves behind: the access-log line, the metrics, the request id. Through the
ASGI app in process (one SQLite file: this is HTTP glue, not storage), and `serve --metrics
--workers 2` for real, where a scrape of either worker must count both."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from accounts_password import PasswordService
from accounts_server import AccountsServer, KeyRing, RateLimits, TokenConfig
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore

from ..helpers import PASSWORD, free_port, load_key, stop_process

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]
USER = {"username": "olga", "email": "olga@example.com", "password": PASSWORD}


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    server = AccountsServer(
        store=SQLiteStore(tmp_path / "accounts.db"),
        tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
        services=[PasswordService()],
        rate_limits=RateLimits(enabled=False),
    )
    app = create_app(server, access_log=True, metrics=True)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4242))
    await server.store.setup()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await server.close()


def samples(text: str) -> Scrape:
    """Every sample of a scrape, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def flows(client: httpx.AsyncClient) -> None:
    """A login by password, a refused one, a refresh, and the old refresh token replayed
    from another browser (a reuse)."""
    assert (
        await client.post("/accounts/password/register", json={"user": USER})
    ).status_code == 200
    good = {"user": {"username": "olga"}, "password": PASSWORD}
    logged_in = await client.post("/accounts/password/authenticate", json=good)
    assert logged_in.status_code == 200, logged_in.text
    tokens = logged_in.json()["tokens"]
    bad = {"user": {"username": "olga"}, "password": "not the password at all"}
    assert (await client.post("/accounts/password/authenticate", json=bad)).status_code == 401
    body = {"refreshToken": tokens["refreshToken"]}
    assert (await client.post("/accounts/refreshTokens", json=body)).status_code == 200
    elsewhere = {"User-Agent": "another-browser"}
    replay = await client.post("/accounts/refreshTokens", json=body, headers=elsewhere)
    assert replay.status_code == 401


async def test_metrics_count_events_errors_and_requests_by_route(
    observed: httpx.AsyncClient,
) -> None:
    await flows(observed)
    answer = await observed.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    scrape = samples(answer.text)
    events = "accounts_events_total"
    assert value(scrape, events, event="login_success", service="password", code="") == 1
    login_error = {"event": "login_error", "service": "password", "code": "InvalidCredentials"}
    assert value(scrape, events, **login_error) == 1
    assert value(scrape, events, event="refresh_tokens_success", service="", code="") == 1
    assert value(scrape, events, event="refresh_token_reused", service="", code="TokenReused") == 1
    refresh = "/accounts/refreshTokens"
    assert value(scrape, "accounts_errors_total", route=refresh, code="TokenReused") == 1
    latency = "accounts_request_duration_seconds_count"
    assert value(scrape, latency, route=refresh, method="POST", status="200") == 1
    assert value(scrape, latency, route=refresh, method="POST", status="401") == 1
    # No label holds anything a client chose: names, addresses, tokens.
    assert "olga" not in answer.text and "203.0.113.7" not in answer.text


async def test_every_request_gets_an_access_line_with_its_id_and_no_path_it_was_sent(
    observed: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="accounts_server.access")
    await flows(observed)
    # A query a client sent (an OAuth callback's code and state are in one) is never logged.
    answer = await observed.get("/accounts/oauth/x/callback?code=SECRET-CODE&state=SECRET-STATE")
    lines = [r for r in caplog.records if r.name == "accounts_server.access"]
    assert len(lines) == 6
    login = lines[1]
    assert login.getMessage() == "POST /accounts/{service}/authenticate 200"
    assert (login.route, login.status) == ("/accounts/{service}/authenticate", 200)  # type: ignore[attr-defined]
    assert login.user_id  # type: ignore[attr-defined]
    assert lines[2].code == "InvalidCredentials"  # type: ignore[attr-defined]
    assert lines[-1].request_id == answer.headers["x-request-id"]  # type: ignore[attr-defined]
    assert len({r.request_id for r in lines}) == len(lines)  # type: ignore[attr-defined]
    assert "SECRET" not in caplog.text


@contextmanager
def serving(workdir: Path, *args: str) -> Iterator[str]:
    """`accounts-server serve` in its own process on a free port, up once /health answers
    (within 30 s); stopped by its PID (the supervisor stops its workers) however it ends."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "accounts_server.cli", "serve", "--port", str(port), *args],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "serve exited early"
            with suppress(httpx.TransportError):
                if httpx.get(f"{base}/accounts/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "serve did not answer within 30 s"
            time.sleep(0.1)
        yield base
    finally:
        stop_process(process)


def test_with_workers_every_scrape_counts_every_process(tmp_path: Path) -> None:
    """Each request on a new connection, so both workers answer some; each scrape (of
    whichever worker) sees all of them."""
    with serving(tmp_path, "--metrics", "--workers", "2", "--mail", "none") as base:
        for i in range(12):  # as many names (10 failures of one name would be rate limited)
            refused = {"user": {"username": f"nobody{i}"}, "password": "not a password we know"}
            answer = httpx.post(f"{base}/accounts/password/authenticate", json=refused, timeout=10)
            assert answer.status_code == 401
        for _ in range(4):
            scrape = samples(httpx.get(f"{base}/metrics", timeout=10).text)
            labels = {"event": "login_error", "service": "password", "code": "InvalidCredentials"}
            assert value(scrape, "accounts_events_total", **labels) == 12
