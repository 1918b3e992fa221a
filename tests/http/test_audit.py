"""The audit log through the app: a user's own recent security activity, the admin's view with
its filters and pages, clear refusals of bad queries, nothing secret in a record; and the
CLI's listing on the same file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from accounts_server import AccountsServer, User
from accounts_server.cli import main
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore

from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD

OTHER_BROWSER = {"User-Agent": "another-browser/2.0"}


@pytest.fixture
async def site(make_server: MakeServer) -> AsyncIterator[tuple[AccountsServer, httpx.AsyncClient]]:
    def only_root(user: User, action: str) -> bool:
        return user.username == "root"

    server = make_server(authorize_admin=only_root)
    transport = httpx.ASGITransport(app=create_app(server), client=("203.0.113.9", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
        yield server, api


async def sign_up(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    assert (await api.post("/password/register", json={"user": user})).status_code == 200
    login = await api.post("/password/authenticate", json={"user": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    body: dict[str, Any] = login.json()
    return body


def bearer(login: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {login['tokens']['accessToken']}"}


async def test_a_user_sees_their_own_security_activity_newest_first(
    site: tuple[AccountsServer, httpx.AsyncClient], clock: Clock
) -> None:
    _, api = site
    first = await sign_up(api, "ivy")
    clock.advance(timedelta(seconds=1))
    stolen = {"refreshToken": first["tokens"]["refreshToken"]}
    assert (await api.post("/refreshTokens", json=stolen)).status_code == 200
    clock.advance(timedelta(seconds=1))
    replay = await api.post("/refreshTokens", json=stolen, headers=OTHER_BROWSER)
    assert replay.json()["code"] == "TokenReused"
    clock.advance(timedelta(seconds=1))
    again = await api.post("/password/authenticate", json={"user": "ivy", "password": PASSWORD})
    await sign_up(api, "max")  # someone else's activity is not ivy's

    page = await api.get("/audit", headers=bearer(again.json()))
    assert page.status_code == 200, page.text
    records = page.json()["records"]
    assert [r["event"] for r in records] == [
        "login_success",
        "refresh_token_reused",
        "login_success",
        "create_user_success",
    ]
    reuse = records[1]
    assert reuse["code"] == "TokenReused"
    assert (reuse["ip"], reuse["userAgent"]) == ("203.0.113.9", "another-browser/2.0")
    assert reuse["sessionId"] == first["sessionId"]
    assert records[0]["service"] == "password"
    assert page.json()["next"] is None
    text = page.text
    for secret in (PASSWORD, first["tokens"]["accessToken"], first["tokens"]["refreshToken"]):
        assert secret not in text


async def test_pages_follow_next_until_none(
    site: tuple[AccountsServer, httpx.AsyncClient], clock: Clock
) -> None:
    _, api = site
    login = await sign_up(api, "ivy")
    for _ in range(4):
        clock.advance(timedelta(seconds=1))
        await api.post("/password/authenticate", json={"user": "ivy", "password": PASSWORD})
    seen, cursor = [], ""
    while True:
        page = (await api.get(f"/audit?limit=2{cursor}", headers=bearer(login))).json()
        seen += [r["id"] for r in page["records"]]
        if page["next"] is None:
            break
        cursor = f"&before={page['next']}"
    assert len(seen) == len(set(seen)) == 6  # created, then five sign-ins
    assert seen == sorted(seen, reverse=True)


async def test_the_admin_view_filters_by_user_event_and_time(
    site: tuple[AccountsServer, httpx.AsyncClient], clock: Clock
) -> None:
    _, api = site
    root = await sign_up(api, "root")
    ivy = await sign_up(api, "ivy")
    start = clock.now
    clock.advance(timedelta(minutes=1))
    wrong = {"user": "ivy", "password": "not ivy's password at all"}
    assert (await api.post("/password/authenticate", json=wrong)).status_code == 401
    assert (await api.post("/logout", headers=bearer(ivy))).status_code == 200

    def admin_audit(query: str) -> Any:
        return api.get(f"/admin/audit?{query}", headers=bearer(root))

    mine = (await admin_audit(f"user={ivy['user']['id']}")).json()["records"]
    assert [r["event"] for r in mine] == ["logout_success", "login_success", "create_user_success"]
    failures = (await admin_audit("event=login_error")).json()["records"]
    assert [(r["code"], r["service"], r["userId"]) for r in failures] == [
        ("InvalidCredentials", "password", None)  # no user named: refusals do not enumerate
    ]
    since = quote((start + timedelta(seconds=30)).isoformat())  # its "+00:00" URL-safe
    recent = (await admin_audit(f"since={since}&event=logout_success,login_error")).json()
    assert [r["event"] for r in recent["records"]] == ["logout_success", "login_error"]
    # Reading the log is an admin action, and kept as one.
    reads = (await admin_audit("event=admin_action")).json()["records"]
    assert reads[0]["detail"] == "audit.list" and reads[0]["actorId"] == root["user"]["id"]

    back = await api.post("/password/authenticate", json={"user": "ivy", "password": PASSWORD})
    assert (await api.get("/admin/audit", headers=bearer(back.json()))).status_code == 403
    assert (await api.get("/admin/audit")).status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        "event=password_guessed",
        "limit=0",
        "limit=501",
        "limit=-1",
        "since=yesterday",
        "before=%7B%22%24gt%22%3A%22%22%7D",  # {"$gt":""}: never an operator
    ],
)
async def test_a_bad_query_is_a_clear_400(
    site: tuple[AccountsServer, httpx.AsyncClient], query: str
) -> None:
    _, api = site
    root = await sign_up(api, "root")
    answer = await api.get(f"/admin/audit?{query}", headers=bearer(root))
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "InvalidRequest"


def test_the_cli_lists_a_users_records(tmp_path: Path) -> None:
    db = str(tmp_path / "accounts.db")
    asyncio.run(SQLiteStore(db).close())  # the file `serve` would have created
    runner = CliRunner()
    args = ["users", "create", "--username", "zoe", "--password", PASSWORD, "--db", db]
    created = runner.invoke(main, args)
    assert created.exit_code == 0, created.output
    listed = runner.invoke(main, ["audit", "--user", "zoe", "--db", db], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "create_user_success" in listed.output
    refused = runner.invoke(main, ["audit", "--event", "nope", "--db", db])
    assert refused.exit_code == 2 and "'nope' is not one of" in refused.output


async def test_address_changes_are_kept(site: tuple[AccountsServer, httpx.AsyncClient]) -> None:
    _, api = site
    login = await sign_up(api, "ivy")
    added = await api.post(
        "/password/addEmail", json={"newEmail": "ivy2@example.com"}, headers=bearer(login)
    )
    assert added.status_code == 200, added.text
    records = (await api.get("/audit", headers=bearer(login))).json()["records"]
    assert records[0]["event"] == "email_added"
