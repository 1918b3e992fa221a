"""The admin console without a browser: real HTTP through the ASGI app, one cookie jar per
person (an admin, a user), the API beside it to see that what the console does holds there.
tests/browser/ drives the same pages in Chromium."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from accounts_password import PasswordService
from accounts_server import AccountsServer, AuditConfig, AuditQuery, SealingKeys, User
from accounts_server.http import create_app

from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD

ROOT = "/accounts/ui"


@dataclass
class Person:
    browser: httpx.AsyncClient

    async def page(self, path: str) -> httpx.Response:
        return await self.browser.get(f"{ROOT}{path}")

    async def submit(self, path: str, fields: dict[str, str], *, on: str) -> httpx.Response:
        shown = await self.page(on)
        found = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert found, shown.text
        return await self.browser.post(f"{ROOT}{path}", data={"csrf": found.group(1), **fields})

    async def sign_in(self, user: str, password: str = PASSWORD) -> None:
        done = await self.submit("/signin", {"user": user, "password": password}, on="/signin")
        assert done.status_code == 303, done.text


@dataclass
class Console:
    server: AccountsServer
    admin: Person
    user: Person
    api: httpx.AsyncClient
    clock: Clock

    async def api_login(self, user: str, password: str = PASSWORD) -> str:
        body = {"user": {"username": user}, "password": password}
        answer = await self.api.post("/accounts/password/authenticate", json=body)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["tokens"]["accessToken"])

    async def api_user(self, token: str) -> object:
        answer = await self.api.get("/accounts/user", headers={"Authorization": f"Bearer {token}"})
        return answer.json()

    async def user_id(self, username: str) -> str:
        found = await self.server.find_user_by_username(username)
        assert found is not None
        return found.id


async def add(server: AccountsServer, username: str, email: str | None = None) -> None:
    service = server.services["password"]
    assert isinstance(service, PasswordService)
    await service.create_user(server.context, username=username, email=email, password=PASSWORD)


def _is_root(user: User, *_: object) -> bool:
    return user.username == "root"


@pytest.fixture
async def console(make_server: MakeServer, clock: Clock) -> AsyncIterator[Console]:
    server = make_server(
        audit=AuditConfig(),
        sealing=SealingKeys.generate(),
        authorize_admin=_is_root,
        impersonation_authorize=_is_root,
    )
    for name in ("root", "ada"):
        await add(server, name, f"{name}@example.com")
    app = create_app(server, ui=True)

    def client(ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(ip, 1))
        return httpx.AsyncClient(transport=transport, base_url="http://t")

    async with (
        client("198.51.100.1") as a,
        client("198.51.100.2") as u,
        client("203.0.113.9") as api,
    ):
        admin, user = Person(a), Person(u)
        await admin.sign_in("root")
        yield Console(server, admin, user, api, clock)


async def test_only_admins_see_the_console(console: Console) -> None:
    assert 'href="/accounts/ui/admin"' in (await console.admin.page("/account")).text
    await console.user.sign_in("ada")
    assert 'href="/accounts/ui/admin"' not in (await console.user.page("/account")).text
    for path in (
        "/admin",
        "/admin/users",
        "/admin/audit",
        f"/admin/users/{await console.user_id('root')}",
    ):
        refused = await console.user.page(path)
        assert refused.status_code == 403, path
        assert "root@example.com" not in refused.text
    anonymous = await console.api.get(f"{ROOT}/admin")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == f"{ROOT}/signin?return_to=/accounts/ui/admin"


async def test_the_dashboard_charts_a_week_per_hour(console: Console) -> None:
    await console.api_login("ada")
    console.clock.advance(timedelta(hours=3))
    await console.api_login("ada")
    await console.api.post(
        "/accounts/password/authenticate",
        json={"user": {"username": "ada"}, "password": "not the password"},
    )
    console.clock.advance(timedelta(days=8))  # the first records fall out of the chart
    await console.user.sign_in("ada")
    await add(console.server, "cy")
    await console.admin.sign_in("root")  # the old session still lives; this is one more

    board = await console.admin.page("/admin")
    assert board.status_code == 200, board.text
    assert board.text.count("<svg") == 4 and "<script" not in board.text
    charts = dict(re.findall(r'class="chart-(\w+)" data-bars="(\d+)"', board.text))
    # Within the last 7 days: two sign-ins (ada's here, root's), cy's registration.
    assert charts == {
        "login_success": "1",
        "login_error": "0",
        "create_user_success": "1",
        "refresh_token_reused": "0",
    }
    assert "<strong>Sign-ins</strong> · 2 in 7 days, at most 2 in an hour" in board.text
    assert "<strong>Failed sign-ins</strong> · none in 7 days" in board.text
    assert re.search(r'id="active-sessions">5<', board.text)  # every session of 30 days
    viewed = await console.server.console_admin("test").list_audit(
        AuditQuery(events=("admin_action",), limit=5)
    )
    assert any(r.detail == "dashboard.view" and r.actor_id for r in viewed)


async def test_users_are_searched_and_paged(console: Console) -> None:
    for n in range(55):
        await add(console.server, f"user-{n:02d}")
    first = await console.admin.page("/admin/users?q=user-")
    assert first.text.count('href="/accounts/ui/admin/users/') == 50
    assert "page=2" in first.text and "Page 1" in first.text
    second = await console.admin.page("/admin/users?q=user-&page=2")
    assert second.text.count('href="/accounts/ui/admin/users/') == 5
    assert "page=3" not in second.text
    one = await console.admin.page("/admin/users?q=user-07")
    assert ">user-07<" in one.text and "user-08" not in one.text
    assert (await console.admin.page("/admin/users?page=zero")).status_code == 400
    assert (await console.admin.page("/admin/users/nobody")).status_code == 404


async def test_deactivation_from_the_console_holds_on_the_next_api_call(
    console: Console,
) -> None:
    ada = await console.user_id("ada")
    token = await console.api_login("ada")
    assert await console.api_user(token) is not None
    detail = await console.admin.page(f"/admin/users/{ada}")
    assert "ada@example.com" in detail.text and "203.0.113.9" in detail.text

    done = await console.admin.submit(
        f"/admin/users/{ada}/deactivate", {}, on=f"/admin/users/{ada}"
    )
    assert done.headers["location"] == f"{ROOT}/admin/users/{ada}?done=deactivate"
    assert await console.api_user(token) is None
    again = await console.admin.page(f"/admin/users/{ada}?done=deactivate")
    assert "Deactivated" in again.text and "No live sessions." in again.text

    await console.admin.submit(f"/admin/users/{ada}/activate", {}, on=f"/admin/users/{ada}")
    fresh = await console.api_login("ada")
    assert await console.api_user(fresh) is not None
    sid = re.search(
        rf"/admin/users/{ada}/sessions/([\w-]+)/revoke",
        (await console.admin.page(f"/admin/users/{ada}")).text,
    )
    assert sid
    await console.admin.submit(
        f"/admin/users/{ada}/sessions/{sid.group(1)}/revoke", {}, on=f"/admin/users/{ada}"
    )
    assert await console.api_user(fresh) is None

    records = await console.admin.page(f"/admin/audit?user={ada}&event=admin_action")
    for action in ("users.deactivate", "users.activate", "sessions.revoke"):
        assert f"<code>{action}</code>" in records.text
    assert "<td>Signed in" not in records.text


async def test_deletion_needs_its_box_ticked(console: Console) -> None:
    ada = await console.user_id("ada")
    unticked = await console.admin.submit(
        f"/admin/users/{ada}/delete", {}, on=f"/admin/users/{ada}"
    )
    assert unticked.status_code == 400 and "tick the box" in unticked.text
    assert await console.server.find_user_by_id(ada) is not None
    forged = await console.admin.browser.post(
        f"{ROOT}/admin/users/{ada}/delete", data={"csrf": "guess", "confirm": "yes"}
    )
    assert forged.status_code == 400
    assert await console.server.find_user_by_id(ada) is not None
    done = await console.admin.submit(
        f"/admin/users/{ada}/delete", {"confirm": "yes"}, on=f"/admin/users/{ada}"
    )
    assert done.headers["location"] == f"{ROOT}/admin/users?done=deleted"
    assert await console.server.find_user_by_id(ada) is None


async def test_an_admin_acts_as_a_user_and_comes_back(console: Console) -> None:
    ada = await console.user_id("ada")
    acting = await console.admin.submit(
        f"/admin/users/{ada}/impersonate", {}, on=f"/admin/users/{ada}"
    )
    assert acting.headers["location"] == f"{ROOT}/account"
    account = await console.admin.page("/account")
    assert "You are acting as ada" in account.text and "ada@example.com" in account.text
    # An impersonation session never reaches the console, whoever its admin is.
    assert (await console.admin.page("/admin")).status_code == 403

    back = await console.admin.submit("/signout", {}, on="/account")
    assert back.headers["location"] == f"{ROOT}/admin/users/{ada}"
    detail = await console.admin.page(f"/admin/users/{ada}")
    assert detail.status_code == 200 and "impersonated by" not in detail.text
    assert "You are acting as" not in (await console.admin.page("/account")).text


async def test_the_audit_log_filters_and_refuses_what_is_not_an_event(console: Console) -> None:
    await console.api.post(
        "/accounts/password/authenticate",
        json={"user": {"username": "ada"}, "password": "not the password"},
    )
    errors = await console.admin.page("/admin/audit?event=login_error")
    assert "(InvalidCredentials)" in errors.text and "<td>Signed in" not in errors.text
    everything = await console.admin.page("/admin/audit")
    assert "<td>Signed in" in everything.text and "<td>Sign-in refused" in everything.text
    bad = await console.admin.page("/admin/audit?event=drop_tables")
    assert bad.status_code == 400 and "not an audited event" in bad.text
