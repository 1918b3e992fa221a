"""OpenID Connect login against a real, certified provider (oidc-provider) on loopback.

The browser is two httpx clients with cookie jars: one speaks to our app (ASGI), one to the
provider over TCP; redirects are followed by hand, as a browser would.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, get_args
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import RSAKey

from accounts_oauth import OAuthService, OIDCProvider
from accounts_server import AccountsServer, EventName, HookEvent, Store, User
from accounts_server.http import create_app

from ..conftest import CALLBACK, CLIENT_ID, CLIENT_SECRET, MakeServer, Provider


@dataclass
class Browser:
    server: AccountsServer
    app: httpx.AsyncClient
    op: httpx.AsyncClient

    async def start(self, hint: str = "user-verified") -> str:
        """Our authorize route; returns the provider URL it redirects to."""
        response = await self.app.get("/accounts/oauth/test/authorize", params={"login_hint": hint})
        assert response.status_code == 302, response.text
        return response.headers["location"]

    async def at_provider(self, url: str) -> str:
        """Follow the provider's redirects until it sends the browser to our callback."""
        for _ in range(10):
            if url.startswith(CALLBACK):
                return url
            response = await self.op.get(url)
            assert response.status_code in (302, 303), response.text
            url = urljoin(url, response.headers["location"])
        raise AssertionError("the provider never redirected to the callback")

    async def callback(self, url: str, client: httpx.AsyncClient | None = None) -> httpx.Response:
        parts = urlsplit(url)
        return await (client or self.app).get(f"{parts.path}?{parts.query}")

    async def login(self, hint: str = "user-verified") -> httpx.Response:
        return await self.callback(await self.at_provider(await self.start(hint)))


@pytest.fixture
async def browser(
    make_server: MakeServer, provider: Provider, request: pytest.FixtureRequest
) -> AsyncIterator[Browser]:
    options: dict[str, Any] = dict(getattr(request, "param", {}))
    server_options: dict[str, Any] = options.pop("server", {})
    oidc = OIDCProvider(
        name="test",
        issuer=provider.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=CALLBACK,
    )
    server = make_server(services=[OAuthService([oidc], **options)], **server_options)
    transport = httpx.ASGITransport(app=create_app(server))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as app,
        httpx.AsyncClient(timeout=10) as op,
    ):
        yield Browser(server, app, op)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


async def test_happy_path_creates_then_finds_the_user(browser: Browser, store: Store) -> None:
    created: list[HookEvent] = []
    browser.server.on("create_user_success", created.append)
    response = await browser.login()
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["user"]["emails"] == [{"address": "verified@example.test", "verified": True}]
    token = result["tokens"]["accessToken"]
    me = await browser.app.get("/accounts/user", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["id"] == result["user"]["id"]
    again = await browser.login()
    assert again.json()["user"]["id"] == result["user"]["id"]
    assert len(created) == 1
    found = await store.find_user_by_identity("test", "user-verified")
    assert found is not None and found.id == result["user"]["id"]


def _without_emails(user: User) -> User:
    return replace(user, emails=())


@pytest.mark.parametrize(
    "browser", [{"server": {"user_sanitizer": _without_emails}}], indirect=True
)
async def test_the_user_sanitizer_holds_for_users_the_provider_creates(
    browser: Browser, store: Store
) -> None:
    """A user created by the OIDC service reaches listeners and the client sanitized, like
    every other user: here the sanitizer hides the addresses."""
    events: list[HookEvent] = []
    for name in get_args(EventName):
        if name != "validate_login":
            browser.server.on(name, events.append)
    response = await browser.login()
    assert response.status_code == 200, response.text
    assert response.json()["user"]["emails"] == []
    assert "create_user_success" in {e.name for e in events}
    assert all(e.user is None or e.user.emails == () for e in events), events
    stored = await store.find_user_by_identity("test", "user-verified")
    assert stored is not None and stored.emails  # stored as given, hidden only on the way out


async def test_authorize_uses_pkce_state_and_nonce(browser: Browser) -> None:
    query = parse_qs(urlsplit(await browser.start()).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["state"][0]) >= 43 and len(query["nonce"][0]) >= 43
    assert query["redirect_uri"] == [CALLBACK]
    cookie = browser.app.cookies.get("accounts_oauth")
    assert cookie is not None


async def test_missing_wrong_and_replayed_state(browser: Browser) -> None:
    url = await browser.at_provider(await browser.start())
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    code = query["code"][0]
    for params in ({"code": code}, {"code": code, "state": "forged-state"}):
        assert_error(
            await browser.app.get("/accounts/oauth/test/callback", params=params),
            401,
            "InvalidToken",
        )
    assert (await browser.callback(url)).status_code == 200
    assert_error(await browser.callback(url), 401, "InvalidToken")  # replayed state


async def test_state_is_bound_to_the_browser_that_started(browser: Browser) -> None:
    url = await browser.at_provider(await browser.start())
    transport = httpx.ASGITransport(app=create_app(browser.server))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as stranger:
        assert_error(await browser.callback(url, stranger), 401, "InvalidToken")


async def test_wrong_nonce_is_refused(browser: Browser) -> None:
    parts = urlsplit(await browser.start())
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["nonce"] = secrets.token_urlsafe(32)  # the provider will sign this one instead
    tampered = urlunsplit(parts._replace(query=urlencode(query)))
    response = await browser.callback(await browser.at_provider(tampered))
    assert_error(response, 401, "OAuthFailed")


async def test_code_replay_is_refused(browser: Browser) -> None:
    first = await browser.at_provider(await browser.start())
    assert (await browser.callback(first)).status_code == 200
    code = parse_qs(urlsplit(first).query)["code"][0]
    # A fresh, valid state from this browser, paired with the spent code.
    fresh = parse_qs(urlsplit(await browser.start()).query)["state"][0]
    response = await browser.app.get(
        "/accounts/oauth/test/callback", params={"code": code, "state": fresh}
    )
    assert_error(response, 401, "OAuthFailed")


async def test_id_token_signed_with_another_key_is_refused(
    browser: Browser, provider: Provider
) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "attacker"})
    now = int(time.time())
    claims = {
        "iss": provider.issuer,
        "aud": CLIENT_ID,
        "sub": "user-verified",
        "iat": now,
        "exp": now + 300,
        "email": "verified@example.test",
        "email_verified": True,
    }
    forged = jwt.encode({"alg": "RS256", "kid": "attacker"}, claims, key)
    response = await browser.app.post(
        "/accounts/oauth/authenticate", json={"provider": "test", "idToken": forged}
    )
    assert_error(response, 401, "OAuthFailed")
    none_alg = forged.split(".")[0]
    assert_error(
        await browser.app.post(
            "/accounts/oauth/authenticate",
            json={"provider": "test", "idToken": f"{none_alg}.e30."},
        ),
        401,
        "OAuthFailed",
    )


async def test_unverified_email_never_links_to_an_existing_user(
    browser: Browser, store: Store
) -> None:
    existing = await browser.server.create_user(username="uma", emails=["unverified@example.test"])
    await store.set_email_verified(
        existing.id, "unverified@example.test", now=browser.server.clock()
    )
    response = await browser.login("user-unverified")
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert user["id"] != existing.id
    assert user["emails"] == []  # an unverified address is not attached to anyone
    assert await store.find_user_by_identity("test", "user-unverified") is not None
    owner = await store.find_user_by_email("unverified@example.test")
    assert owner is not None and owner.id == existing.id


async def test_verified_email_links_only_to_a_verified_account(
    browser: Browser, store: Store
) -> None:
    unverified_here = await browser.server.create_user(emails=["verified@example.test"])
    first = (await browser.login()).json()["user"]
    assert first["id"] != unverified_here.id  # our side never verified it: no link
    assert first["emails"] == []
    await store.delete_user(first["id"])
    await store.set_email_verified(
        unverified_here.id, "verified@example.test", now=browser.server.clock()
    )
    linked = (await browser.login()).json()["user"]
    assert linked["id"] == unverified_here.id


async def test_verified_email_links_whatever_its_spelling(browser: Browser, store: Store) -> None:
    """The provider's address is matched to ours as the store looks it up (`canonical_email`),
    so a fullwidth or upper-case spelling on our side links too; ours is kept as given."""
    existing = await browser.server.create_user(emails=["ＶＥＲＩＦＩＥＤ@Example.TEST"])
    await store.set_email_verified(existing.id, "verified@example.test", now=browser.server.clock())
    linked = (await browser.login()).json()["user"]
    assert linked["id"] == existing.id
    assert linked["emails"] == [{"address": "ＶＥＲＩＦＩＥＤ@Example.TEST", "verified": True}]


@pytest.mark.parametrize("browser", [{"frontend_url": "https://app.example/done"}], indirect=True)
async def test_frontend_gets_a_one_time_code_never_tokens(browser: Browser) -> None:
    response = await browser.login()
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith("https://app.example/done?code=")
    assert "eyJ" not in location  # no JWT in a URL
    code = parse_qs(urlsplit(location).query)["code"][0]
    exchanged = await browser.app.post("/accounts/oauth/exchange", json={"code": code})
    assert exchanged.status_code == 200 and exchanged.json()["tokens"]["accessToken"]
    assert_error(
        await browser.app.post("/accounts/oauth/exchange", json={"code": code}), 401, "InvalidToken"
    )


@pytest.mark.parametrize("browser", [{"on_new_identity": lambda info: False}], indirect=True)
async def test_on_new_identity_can_refuse(browser: Browser) -> None:
    assert_error(await browser.login(), 403, "LoginNotAllowed")


async def test_native_client_logs_in_with_its_own_id_token(
    browser: Browser, provider: Provider
) -> None:
    """A native app runs the flow itself (own PKCE and nonce) and hands us the ID token."""
    discovery = (await browser.op.get(f"{provider.issuer}/.well-known/openid-configuration")).json()
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
    authorize = (
        discovery["authorization_endpoint"]
        + "?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": CALLBACK,
                "scope": "openid email",
                "state": "native",
                "nonce": nonce,
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
                "login_hint": "user-verified",
            }
        )
    )
    code = parse_qs(urlsplit(await browser.at_provider(authorize)).query)["code"][0]
    tokens = await browser.op.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    id_token = tokens.json()["id_token"]
    body = {"provider": "test", "idToken": id_token, "nonce": "not-the-nonce"}
    assert_error(
        await browser.app.post("/accounts/oauth/authenticate", json=body), 401, "OAuthFailed"
    )
    body["nonce"] = nonce
    response = await browser.app.post("/accounts/oauth/authenticate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["emails"][0]["address"] == "verified@example.test"


async def test_unknown_provider(browser: Browser) -> None:
    assert_error(await browser.app.get("/accounts/oauth/nope/authorize"), 404, "ProviderNotFound")


def test_provider_settings_are_checked() -> None:
    from accounts_server import ConfigurationError

    with pytest.raises(ConfigurationError):
        OIDCProvider(name="x y", issuer="i", client_id="c", redirect_uri="r")
    with pytest.raises(ConfigurationError):
        OIDCProvider(name="x", issuer="i", client_id="c", redirect_uri="r", scopes=("email",))
    with pytest.raises(ConfigurationError):
        OAuthService([])
