"""Sessions as the user manages them, over HTTP: listing, revoking, "remember me", and
deleting one's own account. Isolation: nobody sees or ends another user's session."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from accounts_server import AccountsServer
from accounts_server.http import create_app

from ..conftest import Clock
from ..helpers import PASSWORD


def client(server: AccountsServer, ip: str, agent: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(server), client=(ip, 1))
    return httpx.AsyncClient(
        transport=transport, base_url="http://t/accounts", headers={"User-Agent": agent}
    )


async def login(api: httpx.AsyncClient, name: str, **extra: Any) -> dict[str, Any]:
    body = {"user": name, "password": PASSWORD, **extra}
    response = await api.post("/password/authenticate", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def auth(result: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {result['tokens']['accessToken']}"}


def setup(server: AccountsServer) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    return client(server, "198.51.100.1", "phone/1"), client(server, "198.51.100.2", "laptop/2")


async def register(api: httpx.AsyncClient) -> None:
    for name in ("ann", "ben"):
        user = {"username": name, "password": PASSWORD}
        assert (await api.post("/password/register", json={"user": user})).status_code == 200


async def test_list_own_sessions_with_current_flag_and_no_secrets(
    server: AccountsServer, clock: Clock
) -> None:
    phone, laptop = setup(server)
    async with phone, laptop:
        await register(phone)
        on_phone = await login(phone, "ann")
        clock.advance(timedelta(seconds=1))
        on_laptop = await login(laptop, "ann")
        await login(phone, "ben")
        response = await laptop.get("/sessions", headers=auth(on_laptop))
        sessions = response.json()
        assert [s["id"] for s in sessions] == [on_laptop["sessionId"], on_phone["sessionId"]]
        assert [s["current"] for s in sessions] == [True, False]
        assert [(s["ip"], s["userAgent"]) for s in sessions] == [
            ("198.51.100.2", "laptop/2"),
            ("198.51.100.1", "phone/1"),
        ]
        text = response.text.lower()
        assert "hash" not in text and "token" not in text
        assert on_phone["tokens"]["refreshToken"] not in response.text
        assert (await laptop.get("/sessions")).status_code == 401


async def test_revoking_is_isolated_between_users(server: AccountsServer) -> None:
    phone, laptop = setup(server)
    async with phone, laptop:
        await register(phone)
        ann, ben = await login(phone, "ann"), await login(laptop, "ben")
        foreign = await phone.delete(f"/sessions/{ben['sessionId']}", headers=auth(ann))
        unknown = await phone.delete("/sessions/no-such-session", headers=auth(ann))
        assert foreign.status_code == unknown.status_code == 404
        assert (
            foreign.json()
            == unknown.json()
            == {
                "message": "Session not found",
                "code": "SessionNotFound",
            }
        )
        assert (await laptop.get("/user", headers=auth(ben))).json()["username"] == "ben"


async def test_revoke_one_then_all_others(server: AccountsServer) -> None:
    phone, laptop = setup(server)
    async with phone, laptop:
        await register(phone)
        sessions = [await login(phone, "ann") for _ in range(3)]
        this = sessions[0]
        ok = await phone.delete(f"/sessions/{sessions[1]['sessionId']}", headers=auth(this))
        assert ok.status_code == 200 and ok.json() is None
        assert (await phone.get("/user", headers=auth(sessions[1]))).json() is None
        others = await phone.delete("/sessions", headers=auth(this))
        assert others.json() == {"revoked": 1}
        assert (await phone.get("/user", headers=auth(sessions[2]))).json() is None
        assert (await phone.get("/user", headers=auth(this))).json()["username"] == "ann"


async def test_remember_me_picks_the_lifetime(server: AccountsServer) -> None:
    phone, laptop = setup(server)
    async with phone, laptop:
        await register(phone)
        short = await login(phone, "ann", remember=False)
        long = await login(phone, "ann", remember=True)
        default = await login(phone, "ann")
        sessions = {s["id"]: s for s in (await phone.get("/sessions", headers=auth(long))).json()}

        def hours(result: dict[str, Any]) -> float:
            s = sessions[result["sessionId"]]
            return float(s["expiresAt"] - s["createdAt"]) / 3_600_000

        assert (hours(short), hours(long), hours(default)) == (8, 30 * 24, 30 * 24)


async def test_delete_own_account_needs_the_password(server: AccountsServer) -> None:
    phone, laptop = setup(server)
    async with phone, laptop:
        await register(phone)
        ann = await login(phone, "ann")
        for body in ({}, {"password": "not my password"}, {"password": {"$ne": None}}):
            response = await phone.request("DELETE", "/user", json=body, headers=auth(ann))
            assert response.status_code == 401, response.text
            assert response.json()["code"] == "InvalidCredentials"
        gone = await phone.request(
            "DELETE", "/user", json={"password": PASSWORD}, headers=auth(ann)
        )
        assert gone.status_code == 200 and gone.json() is None
        assert (await phone.get("/user", headers=auth(ann))).json() is None
        again = await phone.post(
            "/password/authenticate", json={"user": "ann", "password": PASSWORD}
        )
        assert again.status_code == 401
        assert (
            await laptop.get("/user", headers=auth(await login(laptop, "ben")))
        ).status_code == 200
