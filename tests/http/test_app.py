"""The accounts-js REST protocol through the real ASGI app (httpx ASGITransport)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts_password import PasswordService
from accounts_server import AccountsServer, HookEvent, KeyRing, TokenConfig
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore

from ..conftest import MakeServer
from ..helpers import PASSWORD, load_key

JSON = {"content-type": "application/json"}


async def register(client: httpx.AsyncClient, name: str = "alice") -> str:
    response = await client.post(
        "/accounts/password/register",
        json={"user": {"username": name, "email": f"{name}@example.com", "password": PASSWORD}},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["userId"])


async def login(client: httpx.AsyncClient, name: str = "alice") -> dict[str, Any]:
    response = await client.post(
        "/accounts/password/authenticate",
        json={"user": {"email": f"{name}@example.com"}, "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert "Traceback" not in response.text


class TestFlow:
    async def test_register_login_user_refresh_logout(self, client: httpx.AsyncClient) -> None:
        bodies: list[str] = []
        user_id = await register(client)
        result = await login(client)
        assert set(result) == {"sessionId", "tokens", "user"}
        assert set(result["tokens"]) == {"accessToken", "refreshToken"}
        user = result["user"]
        assert user["id"] == user_id and user["username"] == "alice"
        assert user["emails"] == [{"address": "alice@example.com", "verified": False}]
        assert user["deactivated"] is False
        access = result["tokens"]["accessToken"]

        for response in (
            await client.get("/accounts/user", headers=bearer(access)),
            await client.post("/accounts/user", headers=bearer(access)),
            await client.get("/accounts/user", headers={"Authorization": access}),
            await client.post("/accounts/user", json={"accessToken": access}),
        ):
            assert response.status_code == 200
            assert response.json()["id"] == user_id
            bodies.append(response.text)

        refreshed = await client.post(
            "/accounts/refreshTokens",
            json={"accessToken": access, "refreshToken": result["tokens"]["refreshToken"]},
        )
        assert refreshed.status_code == 200
        assert refreshed.json()["sessionId"] == result["sessionId"]
        assert refreshed.headers["cache-control"] == "no-store"
        bodies.append(refreshed.text)
        new_access = refreshed.json()["tokens"]["accessToken"]

        logout = await client.post("/accounts/logout", headers=bearer(new_access))
        assert logout.status_code == 200 and logout.json() is None
        after = await client.get("/accounts/user", headers=bearer(new_access))
        assert after.status_code == 200 and after.json() is None
        assert_error(
            await client.post("/accounts/logout", headers=bearer(new_access)), 401, "InvalidToken"
        )
        for text in bodies:
            assert "argon2" not in text and PASSWORD not in text and "hash" not in text.lower()

    async def test_verify_authentication_answers_true(self, client: httpx.AsyncClient) -> None:
        await register(client)
        response = await client.post(
            "/accounts/password/verifyAuthentication",
            json={"user": {"username": "alice"}, "password": PASSWORD},
        )
        assert response.status_code == 200 and response.json() is True

    async def test_refresh_reuse_is_401_and_logs_the_session_out(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client)
        tokens = (await login(client))["tokens"]
        body = {"refreshToken": tokens["refreshToken"]}
        assert (await client.post("/accounts/refreshTokens", json=body)).status_code == 200
        # The same token again, from another browser (the grace is the rotating client's).
        elsewhere = {"User-Agent": "another-browser/1.0"}
        again = await client.post("/accounts/refreshTokens", json=body, headers=elsewhere)
        assert_error(again, 401, "TokenReused")
        user = await client.get("/accounts/user", headers=bearer(tokens["accessToken"]))
        assert user.json() is None

    async def test_impersonate_denied_by_default(self, client: httpx.AsyncClient) -> None:
        await register(client)
        target = await register(client, "bob")
        access = (await login(client))["tokens"]["accessToken"]
        response = await client.post(
            "/accounts/impersonate",
            json={"accessToken": access, "impersonated": {"userId": target}},
        )
        assert response.status_code == 200 and response.json() == {"authorized": False}

    async def test_jwks_and_health(self, client: httpx.AsyncClient, server: AccountsServer) -> None:
        for path in ("/accounts/.well-known/jwks.json", "/.well-known/jwks.json"):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.json() == server.jwks()
        health = await client.get("/accounts/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}


class TestAnonymous:
    async def test_user_without_a_valid_token_is_null(self, client: httpx.AsyncClient) -> None:
        for headers in (
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer not-a-token"},
        ):
            response = await client.get("/accounts/user", headers=headers)
            assert response.status_code == 200 and response.json() is None
        response = await client.post("/accounts/user", headers={"Authorization": ""}, json={})
        assert response.json() is None

    async def test_logout_without_token(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.post("/accounts/logout", json={}), 401, "InvalidToken")


class TestErrors:
    async def test_credentials_and_validation(self, client: httpx.AsyncClient) -> None:
        await register(client)
        bad = {"user": {"email": "alice@example.com"}, "password": "wrong password"}
        unknown = {"user": {"email": "zed@example.com"}, "password": PASSWORD}
        first = await client.post("/accounts/password/authenticate", json=bad)
        second = await client.post("/accounts/password/authenticate", json=unknown)
        assert_error(first, 401, "InvalidCredentials")
        assert (first.status_code, first.json()) == (second.status_code, second.json())

        def user(**fields: Any) -> dict[str, Any]:
            return {"user": {"password": PASSWORD, **fields}}

        cases = [
            (user(username="alice"), 409, "UsernameAlreadyExists"),
            (user(email="ALICE@example.com"), 409, "EmailAlreadyExists"),
            (user(email="not-an-email"), 422, "InvalidEmail"),
            (user(username="a@b"), 422, "InvalidUsername"),
            (user(username="x" * 65), 422, "InvalidUsername"),
            ({"user": {"username": "bob", "password": "short"}}, 422, "InvalidPassword"),
            ({"user": {"username": "bob", "password": "x" * 1025}}, 422, "InvalidPassword"),
            (user(), 422, "UsernameOrEmailRequired"),
            (user(username="bob", deactivated=False), 400, "InvalidRequest"),
            ({"user": "bob"}, 400, "InvalidRequest"),
            ({"user": {"username": "bob", "password": 12345678}}, 400, "InvalidRequest"),
        ]
        for body, status, code in cases:
            assert_error(await client.post("/accounts/password/register", json=body), status, code)

    async def test_unknown_service_route_and_method(self, client: httpx.AsyncClient) -> None:
        assert_error(
            await client.post("/accounts/ldap/authenticate", json={}), 404, "ServiceNotFound"
        )
        assert_error(await client.get("/accounts/nope"), 404, "RouteNotFound")
        response = await client.get("/accounts/logout")
        assert_error(response, 405, "MethodNotAllowed")
        assert "POST" in response.headers["allow"]

    async def test_body_rules(self, client: httpx.AsyncClient) -> None:
        route = "/accounts/password/authenticate"
        assert_error(
            await client.post(route, content=b"user=a", headers={"content-type": "text/plain"}),
            415,
            "UnsupportedMediaType",
        )
        assert_error(await client.post(route, content=b"{", headers=JSON), 400, "InvalidRequest")
        assert_error(await client.post(route, content=b"[]", headers=JSON), 400, "InvalidRequest")
        assert_error(
            await client.post(route, content=b'{"a": NaN}', headers=JSON), 400, "InvalidRequest"
        )
        deep = b'{"a":' * 33 + b"1" + b"}" * 33
        assert_error(await client.post(route, content=deep, headers=JSON), 400, "InvalidRequest")
        hostile = b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
        assert_error(await client.post(route, content=hostile, headers=JSON), 400, "InvalidRequest")
        big = json.dumps({"password": "x" * 70_000}).encode()
        assert_error(await client.post(route, content=big, headers=JSON), 413, "RequestTooLarge")

        async def chunks() -> Any:
            for _ in range(100):
                yield b" " * 1024

        assert_error(
            await client.post(route, content=chunks(), headers=JSON), 413, "RequestTooLarge"
        )

    @pytest.mark.parametrize("value", [{"$ne": None}, {"$gt": ""}, ["a"], 1, True, {"$where": "1"}])
    async def test_non_string_fields_are_refused_cleanly(
        self, client: httpx.AsyncClient, value: Any
    ) -> None:
        await register(client)
        for body in (
            {"user": {"email": value}, "password": PASSWORD},
            {"user": value, "password": PASSWORD},
            {"user": {"email": "alice@example.com"}, "password": value},
        ):
            response = await client.post("/accounts/password/authenticate", json=body)
            assert response.status_code in (400, 401), response.text
        response = await client.post("/accounts/refreshTokens", json={"refreshToken": value})
        assert response.status_code in (400, 401)


class TestClientAddress:
    async def test_forwarded_for_is_ignored_unless_from_a_trusted_proxy(
        self, server: AccountsServer
    ) -> None:
        seen: list[HookEvent] = []
        server.on("create_user_success", seen.append)
        server.on("login_success", seen.append)
        headers = {"X-Forwarded-For": "198.51.100.1, 192.0.2.9", "User-Agent": "ua/1"}
        for proxies, expected in (((), "203.0.113.7"), (["203.0.113.0/24"], "192.0.2.9")):
            app = create_app(server, trusted_proxies=proxies)
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                name = f"u{len(seen)}"
                await register(client, name)
                await client.post(
                    "/accounts/password/authenticate",
                    json={"user": name, "password": PASSWORD},
                    headers=headers,
                )
            assert seen[-1].info is not None
            assert (seen[-1].info.ip, seen[-1].info.user_agent) == (expected, "ua/1")


async def test_mountable_without_prefix(make_server: MakeServer) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    host = Starlette(routes=[Mount("/auth", app=create_app(make_server(), prefix=""))])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/auth/user")
        assert response.status_code == 200 and response.json() is None
        assert (await client.get("/auth/.well-known/jwks.json")).status_code == 200


ROUTES = [
    "/accounts/password/authenticate",
    "/accounts/password/verifyAuthentication",
    "/accounts/password/register",
    "/accounts/refreshTokens",
    "/accounts/logout",
    "/accounts/user",
    "/accounts/impersonate",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.dictionaries(
    st.sampled_from(["user", "password", "accessToken", "refreshToken", "impersonated", "x"]),
    json_values,
    max_size=4,
)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = SQLiteStore(Path(tmp_path_factory.mktemp("fuzz")) / "accounts.db")
    server = AccountsServer(
        store=store,
        tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
        services=[PasswordService()],
    )
    yield create_app(server)
    asyncio.run(store.close())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), body=bodies)
def test_no_body_causes_a_500(fuzz_app: Any, route: str, body: dict[str, Any]) -> None:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=fuzz_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(route, json=body)

    response = asyncio.run(post())
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"


async def test_fifty_concurrent_registrations_of_one_email_make_one_user(
    client: httpx.AsyncClient, server: AccountsServer
) -> None:
    async def attempt(i: int) -> httpx.Response:
        user = {"username": f"racer{i}", "email": "race@example.com", "password": PASSWORD}
        return await client.post("/accounts/password/register", json={"user": user})

    responses = await asyncio.gather(*(attempt(i) for i in range(50)))
    assert [r.status_code for r in responses].count(200) == 1
    for response in responses:
        if response.status_code != 200:
            assert_error(response, 409, "EmailAlreadyExists")
    assert await server.store.find_user_by_email("race@example.com") is not None


def _login_scope(*, declared_length: int) -> dict[str, Any]:
    """A raw ASGI scope of a JSON login whose body is `declared_length` bytes, for tests that
    play the server's side of a misbehaving client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/accounts/password/authenticate",
        "raw_path": b"/accounts/password/authenticate",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(declared_length).encode()),
        ],
        "client": ("203.0.113.9", 5000),
        "server": ("testserver", 80),
    }


async def test_a_client_that_drops_mid_body_is_one_debug_line(
    server: AccountsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14 #6: no traceback, no error log, for a client that went away (uvicorn sends
    `http.disconnect` to the app when the connection closes before the body is complete)."""
    app = create_app(server)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"user": {"user', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = _login_scope(declared_length=200)
    with caplog.at_level(logging.DEBUG, logger="accounts_server"):
        await app(scope, receive, send)
    records = [r for r in caplog.records if r.name.startswith("accounts_server")]
    assert [r.levelno for r in records] == [logging.DEBUG], [r.getMessage() for r in records]
    assert "disconnected" in records[0].getMessage() and records[0].exc_info is None


async def test_a_body_that_stops_arriving_is_refused_in_bounded_time(
    make_server: MakeServer,
) -> None:
    """Issue 14 #8: a client that stalls mid-body gets 408 instead of holding the request."""
    app = create_app(make_server(), body_timeout=0.05)
    sent: list[dict[str, Any]] = []
    stalled = asyncio.Event()  # never set: the rest of the body never comes

    async def receive() -> dict[str, Any]:
        if not sent and not stalled.is_set():
            stalled.set()
            return {"type": "http.request", "body": b'{"user"', "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = _login_scope(declared_length=100)
    async with asyncio.timeout(10):
        await app(scope, receive, send)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["code"] == "RequestTimeout"
