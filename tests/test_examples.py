"""The examples run, as a reader would run them."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from accounts_server.cli import load_services

from .helpers import PASSWORD, load_key
from .http.test_uvicorn import serving


def example(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    # Importing builds the module's own `app`; keep its database out of the working tree.
    monkeypatch.setenv("ACCOUNTS_DB", str(tmp_path / "import.db"))
    return importlib.import_module(f"examples.{name}")


async def login(client: httpx.AsyncClient, name: str = "reader") -> str:
    user = {"username": name, "password": PASSWORD}
    assert (
        await client.post("/accounts/password/register", json={"user": user})
    ).status_code == 200
    body = {"user": name, "password": PASSWORD}
    response = await client.post("/accounts/password/authenticate", json=body)
    return str(response.json()["tokens"]["accessToken"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_fastapi_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = example("fastapi_host", monkeypatch, tmp_path)
    app = module.build(tmp_path / "a.db", load_key("ed25519"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        assert (await c.get("/me")).status_code == 401
        assert (await c.get("/")).json() == {"hello": "stranger"}
        token = await login(c)
        assert (await c.get("/me", headers=auth(token))).json()["username"] == "reader"
        assert (await c.get("/", headers=auth(token))).json() == {"hello": "reader"}


async def test_starlette_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = example("starlette_host", monkeypatch, tmp_path)
    app = module.build(tmp_path / "a.db", load_key("ed25519"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        assert (await c.get("/dashboard")).status_code == 403
        token = await login(c)
        assert (await c.get("/dashboard", headers=auth(token))).json() == {"user": "reader"}


async def test_custom_api_key_service_by_entry_point(tmp_path: Path) -> None:
    names = [service.name for service in load_services(("password", "apikey"))]
    assert names == ["password", "apikey"]
    with serving(tmp_path, "--service", "password", "--service", "apikey") as api:
        api.post("/password/register", json={"user": {"username": "bot", "password": PASSWORD}})
        login = api.post("/password/authenticate", json={"user": "bot", "password": PASSWORD})
        token = login.json()["tokens"]["accessToken"]
        key = api.post("/apikey/createKey", headers=auth(token)).json()["apiKey"]
        with_key = api.post("/apikey/authenticate", json={"apiKey": key})
        assert with_key.status_code == 200
        assert with_key.json()["user"]["username"] == "bot"
        wrong = api.post("/apikey/authenticate", json={"apiKey": key[:-3] + "xyz"})
        assert wrong.status_code == 401 and wrong.json()["code"] == "InvalidCredentials"


async def test_jwks_verifier_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = example("jwks_verifier", monkeypatch, tmp_path)
    with serving(tmp_path) as api:
        api.post("/password/register", json={"user": {"username": "ann", "password": PASSWORD}})
        login = api.post("/password/authenticate", json={"user": "ann", "password": PASSWORD})
        token, user_id = login.json()["tokens"]["accessToken"], login.json()["user"]["id"]
        app = module.build(f"http://{api.base_url.host}:{api.base_url.port}/.well-known/jwks.json")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as c:
            assert (await c.get("/orders")).status_code == 403
            assert (await c.get("/orders", headers=auth(token))).json() == {"orders_of": user_id}
            forged = await c.get("/orders", headers=auth(token[:-4] + "AAAA"))
            assert forged.status_code == 401
