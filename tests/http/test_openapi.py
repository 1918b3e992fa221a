"""The served OpenAPI document, and schemathesis fuzzing every route against it: no 500, no
response outside the schema."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from accounts_magic_link import MagicLinkService
from accounts_password import PasswordService
from accounts_server import AccountsServer, KeyRing, SessionConfig, SMTPMailer, TokenConfig
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore

from ..helpers import free_port, load_key

MAILER = SMTPMailer(sender="accounts@example.com", port=free_port(), timeout=1)


def _app() -> object:
    directory = Path(tempfile.mkdtemp(prefix="accounts-openapi-"))
    server = AccountsServer(
        store=SQLiteStore(directory / "accounts.db"),
        tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
        sessions=SessionConfig(reuse_grace=timedelta(seconds=5)),
        # A mailer, as deployed; mails go out only for existing accounts, after the response.
        services=[PasswordService(mailer=MAILER), MagicLinkService(mailer=MAILER)],
    )
    return create_app(server)


APP = _app()
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
schema = schemathesis.openapi.from_asgi("/accounts/openapi.json", APP)


async def test_document_lists_every_route() -> None:
    transport = httpx.ASGITransport(app=APP)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        document = (await client.get("/accounts/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert {
        "/{service}/authenticate",
        "/refreshTokens",
        "/logout",
        "/user",
        "/impersonate",
        "/password/register",
        "/password/resetPassword",
        "/magiclink/requestMagicLinkEmail",
    } <= set(document["paths"])


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms(case: schemathesis.Case[Any]) -> None:
    """What the issue asks: no 500, and every status, content type and body as documented.
    (Not "every schema-valid body succeeds": a blocklisted password is schema-valid and a 422.)"""
    response = case.call()
    case.validate_response(response, checks=CHECKS)


def _served(app: Any, prefix: str) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves under `prefix` (HEAD is GET's twin)."""
    return {
        (method, route.path.removeprefix(prefix))
        for route in app.routes
        if route.path.startswith(prefix + "/")
        for method in route.methods
        if method != "HEAD"
    }


async def test_routes_served_are_exactly_the_routes_documented() -> None:
    """Every route is declared once, in one table: an undocumented route (or a documented one
    that is not served) fails here. Login services' endpoints and the admin surface included."""
    app: Any = APP
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        document = (await client.get("/accounts/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = _served(app, "/accounts")
    assert served == documented
    assert ("POST", "/password/register") in served and ("GET", "/admin/users") in served
    # The one route outside the prefix is the JWKS alias at the root.
    outside = {r.path for r in app.routes if not r.path.startswith("/accounts/")}
    assert outside == {"/.well-known/jwks.json"}


async def test_a_service_endpoint_is_documented_from_its_declaration() -> None:
    app: Any = APP
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        document = (await client.get("/accounts/openapi.json")).json()
    change = document["paths"]["/password/changePassword"]["post"]
    assert change["security"] == [{"bearer": []}]
    body = change["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"oldPassword", "newPassword"}
    admin = document["paths"]["/admin/users/{user_id}"]["delete"]
    assert admin["x-admin"] is True and admin["parameters"][0]["name"] == "user_id"
