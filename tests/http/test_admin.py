"""The admin surface over HTTP: refused by default, refused for non-admins with nothing changed,
and every allowed action audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from accounts_server import AccountsServer, HookEvent, User
from accounts_server.http import create_app

from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD


async def setup_users(
    api: httpx.AsyncClient, *names: str, clock: Clock | None = None
) -> dict[str, dict[str, Any]]:
    logins = {}
    for name in names:
        if clock is not None:
            clock.advance(timedelta(seconds=1))  # a distinct creation time: a stable order
        user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        assert (await api.post("/password/register", json={"user": user})).status_code == 200
        response = await api.post(
            "/password/authenticate", json={"user": name, "password": PASSWORD}
        )
        logins[name] = response.json()
    return logins


def auth(login: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {login['tokens']['accessToken']}"}


@pytest.fixture
async def admin_site(
    make_server: MakeServer,
) -> AsyncIterator[tuple[AccountsServer, httpx.AsyncClient, list[HookEvent]]]:
    def only_root(user: User, action: str) -> bool:
        return user.username == "root"

    server = make_server(authorize_admin=only_root)
    events: list[HookEvent] = []
    server.on("admin_action", events.append)
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
        yield server, api, events


async def test_default_is_deny(server: AccountsServer) -> None:
    transport = httpx.ASGITransport(app=create_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/accounts") as api:
        logins = await setup_users(api, "root", "bob")
        bob_id = logins["bob"]["user"]["id"]
        for method, path in (
            ("GET", "/admin/users"),
            ("POST", f"/admin/users/{bob_id}/deactivate"),
            ("DELETE", f"/admin/users/{bob_id}"),
        ):
            response = await api.request(method, path, headers=auth(logins["root"]))
            assert response.status_code == 403 and response.json()["code"] == "AdminNotAllowed"
        assert (await api.get("/user", headers=auth(logins["bob"]))).json()["id"] == bob_id
        assert (await api.get("/admin/users")).status_code == 401


async def test_non_admin_is_refused_and_nothing_changes(
    admin_site: tuple[AccountsServer, httpx.AsyncClient, list[HookEvent]],
) -> None:
    server, api, events = admin_site
    logins = await setup_users(api, "mallory", "bob")
    bob_id = logins["bob"]["user"]["id"]
    patch = await api.patch(
        f"/admin/users/{bob_id}", json={"username": "owned"}, headers=auth(logins["mallory"])
    )
    assert patch.status_code == 403
    for path in (f"/admin/users/{bob_id}/deactivate", f"/admin/users/{bob_id}/activate"):
        assert (await api.post(path, headers=auth(logins["mallory"]))).status_code == 403
    bob = await server.find_user_by_id(bob_id)
    assert bob is not None and bob.username == "bob" and not bob.deactivated
    assert (await api.get("/user", headers=auth(logins["bob"]))).json()["id"] == bob_id
    assert events == []


async def test_admin_actions_work_and_are_audited(
    admin_site: tuple[AccountsServer, httpx.AsyncClient, list[HookEvent]], clock: Clock
) -> None:
    _, api, events = admin_site
    logins = await setup_users(api, "root", "bob", "bonnie", "carl", clock=clock)
    root, bob = auth(logins["root"]), logins["bob"]
    bob_id = bob["user"]["id"]

    listed = (await api.get("/admin/users", params={"limit": 2, "offset": 1}, headers=root)).json()
    assert [u["username"] for u in listed["users"]] == ["bob", "bonnie"]
    found = (await api.get("/admin/users", params={"search": "BO"}, headers=root)).json()
    assert [u["username"] for u in found["users"]] == ["bob", "bonnie"]
    bad = await api.get("/admin/users", params={"limit": "1000"}, headers=root)
    assert bad.status_code == 400

    assert (await api.get(f"/admin/users/{bob_id}", headers=root)).json()["username"] == "bob"
    renamed = await api.patch(
        f"/admin/users/{bob_id}",
        json={"username": "robert", "extra": {"tier": "gold"}},
        headers=root,
    )
    assert renamed.json()["username"] == "robert" and renamed.json()["tier"] == "gold"
    taken = await api.patch(f"/admin/users/{bob_id}", json={"username": "CARL"}, headers=root)
    assert taken.status_code == 409
    refused = await api.patch(f"/admin/users/{bob_id}", json={"deactivated": False}, headers=root)
    assert refused.status_code == 400

    sessions = (await api.get(f"/admin/users/{bob_id}/sessions", headers=root)).json()
    assert [s["id"] for s in sessions] == [bob["sessionId"]]
    assert "refresh" not in str(sessions).lower()
    revoked = await api.delete(f"/admin/users/{bob_id}/sessions/{bob['sessionId']}", headers=root)
    assert revoked.status_code == 200
    assert (await api.get("/user", headers=auth(bob))).json() is None

    carl = logins["carl"]
    carl_id = carl["user"]["id"]
    assert (await api.post(f"/admin/users/{carl_id}/deactivate", headers=root)).status_code == 200
    assert (await api.get("/user", headers=auth(carl))).json() is None
    assert (await api.post(f"/admin/users/{carl_id}/activate", headers=root)).status_code == 200
    assert (await api.delete(f"/admin/users/{carl_id}", headers=root)).status_code == 200
    assert (await api.get(f"/admin/users/{carl_id}", headers=root)).status_code == 404

    actions = [(e.action, e.actor.username if e.actor else None) for e in events]
    assert actions == [
        ("users.list", "root"),
        ("users.list", "root"),
        ("users.get", "root"),
        ("users.update", "root"),
        ("sessions.list", "root"),
        ("sessions.revoke", "root"),
        ("users.deactivate", "root"),
        ("users.activate", "root"),
        ("users.delete", "root"),
    ]
    deleted = events[-1]
    assert deleted.user is not None and deleted.user.id == carl_id


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("extra", "status", "names"),
    [
        ({"n": 2**63}, 422, "extra.n"),  # orjson reads it; BSON and SQLite cannot keep it
        ({"a": {"b.c": 1}}, 422, "extra.a"),
        ({"$where": "1"}, 422, "extra"),
        ({"a\u0000b": 1}, 422, "extra"),
        ({"": 1}, 422, "extra"),
        ({"big": "x" * 20_000}, 422, "bytes"),
        ({"deep": _nested(20)}, 422, "extra.deep"),
        ([1, 2], 400, "object"),
    ],
)
async def test_extra_fields_a_store_cannot_keep_are_refused_before_it(
    admin_site: tuple[AccountsServer, httpx.AsyncClient, list[HookEvent]],
    clock: Clock,
    extra: object,
    status: int,
    names: str,
) -> None:
    """A clear 4xx naming the field, never a driver's error as a 500; the user unchanged."""
    server, api, _ = admin_site
    logins = await setup_users(api, "root", "bob", clock=clock)
    bob_id = logins["bob"]["user"]["id"]
    refused = await api.patch(
        f"/admin/users/{bob_id}", json={"extra": extra}, headers=auth(logins["root"])
    )
    assert refused.status_code == status, refused.text
    body = refused.json()
    assert body["code"] == ("ValidationFailed" if status == 422 else "InvalidRequest")
    assert names in body["message"]
    user = await server.find_user_by_id(bob_id)
    assert user is not None and user.extra == {}
