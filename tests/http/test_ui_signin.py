"""The hosted pages' other ways in, without a browser: a mailed sign-in link (real SMTP), an
OpenID provider (the real one of tests/servers/oidc-provider), and passkeys (the software
authenticator of tests/authenticator.py) through the pages' CSRF-checked JSON routes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from accounts_magic_link import MagicLinkService
from accounts_oauth import OAuthService, OIDCProvider
from accounts_password import MailSettings, PasswordService
from accounts_server import AccountsServer, AuditConfig, SealingKeys
from accounts_server.http import create_app
from accounts_webauthn import WebAuthnService

from ..authenticator import SoftAuthenticator
from ..conftest import CALLBACK, CLIENT_ID, CLIENT_SECRET, MakeServer, Provider
from ..helpers import PASSWORD, SMTPServer

ROOT = "/accounts/ui"
SITE = "http://testserver"


@dataclass
class Site:
    server: AccountsServer
    browser: httpx.AsyncClient
    smtp: SMTPServer
    transport: httpx.ASGITransport

    async def page(self, path: str) -> httpx.Response:
        return await self.browser.get(f"{ROOT}{path}")

    def csrf(self, shown: httpx.Response) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert found, shown.text
        return found.group(1)

    async def submit(self, path: str, fields: dict[str, str], *, on: str) -> httpx.Response:
        token = self.csrf(await self.page(on))
        return await self.browser.post(f"{ROOT}{path}", data={"csrf": token, **fields})

    async def script(
        self, path: str, body: object, *, on: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """What static/passkeys.js sends: JSON, the page's token in X-CSRF-Token."""
        token = self.csrf(await self.page(on))
        sent = {"X-CSRF-Token": token, "Origin": SITE, **(headers or {})}
        return await self.browser.post(f"{ROOT}{path}", json=body, headers=sent)

    async def register(self, username: str, email: str) -> None:
        fields = {"username": username, "email": email, "password": PASSWORD}
        done = await self.submit("/register", fields, on="/register")
        assert done.headers["location"] == f"{ROOT}/account", done.text


@pytest.fixture
async def site(
    make_server: MakeServer, smtp: SMTPServer, provider: Provider
) -> AsyncIterator[Site]:
    smtp.checkpoint()
    oidc = OIDCProvider(
        name="test",
        label="Test ID",
        issuer=provider.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=CALLBACK,
    )
    services = [
        PasswordService(mailer=smtp.mailer(), mail=MailSettings(site_url=f"{SITE}{ROOT}")),
        MagicLinkService(mailer=smtp.mailer(), site_url=f"{SITE}{ROOT}"),
        WebAuthnService(rp_id="localhost", rp_name="tests", origins=["http://localhost"]),
        OAuthService([oidc], frontend_url=f"{SITE}{ROOT}/oauth"),
    ]
    server = make_server(services=services, audit=AuditConfig(), sealing=SealingKeys.generate())
    transport = httpx.ASGITransport(app=create_app(server, ui=True), client=("198.51.100.4", 1))
    async with httpx.AsyncClient(transport=transport, base_url=SITE) as browser:
        yield Site(server, browser, smtp, transport)


async def test_the_sign_in_page_offers_what_is_installed(site: Site) -> None:
    shown = await site.page("/signin")
    assert 'href="/accounts/ui/signin/with/0">Sign in with Test ID</a>' in shown.text
    same = {"Sec-Fetch-Site": "same-origin"}
    assert (await site.browser.get(f"{ROOT}/signin/with/1", headers=same)).status_code == 404
    assert "Email me a sign-in link" in shown.text
    assert 'id="passkey-signin" hidden' in shown.text  # shown by the script where it can run
    assert '<script src="/accounts/ui/static/passkeys.js" defer></script>' in shown.text
    script = await site.page("/static/passkeys.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


async def test_a_mailed_sign_in_link(site: Site) -> None:
    await site.register("mo", "mo@example.com")
    await site.submit("/signout", {}, on="/account")
    said = await site.submit("/signin/link", {"email": "mo@example.com"}, on="/signin")
    unknown = await site.submit("/signin/link", {"email": "nobody@example.com"}, on="/signin")
    assert said.status_code == unknown.status_code == 200
    assert said.text.replace("nobody", "mo") == unknown.text.replace("nobody", "mo")
    body = next(
        p
        for p in (await site.smtp.wait_for("mo@example.com")).walk()
        if p.get_content_type() == "text/plain"
    )
    text = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
    link = re.search(rf"{SITE}{ROOT}/magic-link/(\S+)", text)
    assert link, text
    landed = await site.browser.get(f"{ROOT}/magic-link/{link.group(1)}")
    assert landed.headers["location"] == f"{ROOT}/magic-link"  # the token leaves the URL
    assert (await site.page("/account")).headers["location"] == f"{ROOT}/signin"  # not yet
    signed = await site.submit("/magic-link", {}, on="/magic-link")
    assert signed.headers["location"] == f"{ROOT}/account"
    assert "mo@example.com" in (await site.page("/account")).text
    await site.submit("/signout", {}, on="/account")
    await site.browser.get(f"{ROOT}/magic-link/{link.group(1)}")
    spent = await site.submit("/magic-link", {}, on="/magic-link")
    assert spent.status_code == 401 and "Not signed in" in spent.text


async def openid_code(site: Site) -> str:
    """The pages' button, the provider (its user chosen by login_hint), our callback: the
    landing URL with the one-time code, as the browser is sent to it."""
    button = await site.browser.get(
        f"{ROOT}/signin/with/0", headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert button.status_code == 303
    assert button.headers["location"] == "/accounts/oauth/test/authorize"
    started = await site.browser.get(f"{button.headers['location']}?login_hint=user-verified")
    assert started.status_code == 302
    url = started.headers["location"]
    async with httpx.AsyncClient(timeout=10) as op:
        for _ in range(10):
            if url.startswith(CALLBACK):
                break
            answer = await op.get(url)
            assert answer.status_code in (302, 303), answer.text
            url = urljoin(url, answer.headers["location"])
    parts = urlsplit(url)
    back = await site.browser.get(f"{parts.path}?{parts.query}")
    assert back.status_code == 302
    landing = str(back.headers["location"])
    assert landing.startswith(f"{SITE}{ROOT}/oauth?code=") and "eyJ" not in landing
    return landing.removeprefix(SITE)


async def test_an_openid_provider_signs_in_through_the_pages(site: Site) -> None:
    landing = await openid_code(site)
    signed = await site.browser.get(landing)
    assert signed.headers["location"] == f"{ROOT}/account"
    account = await site.page("/account")
    assert account.status_code == 200 and "(this one)" in account.text
    await site.browser.get(f"{ROOT}/signin/with/0", headers={"Sec-Fetch-Site": "same-origin"})
    again = await site.browser.get(landing)  # the code is spent
    assert again.status_code == 401 and "Not signed in" in again.text


async def test_a_code_from_another_browser_signs_nobody_in(site: Site) -> None:
    """Login CSRF: an attacker's own one-time code, in a link to a victim who never started
    a sign-in here, does not sign the victim into the attacker's account."""
    landing = await openid_code(site)
    async with httpx.AsyncClient(transport=site.transport, base_url=SITE) as victim:
        refused = await victim.get(landing)
        assert refused.status_code == 400 and "Start signing in" in refused.text
        assert not any(c.name == "ui_at" for c in victim.cookies.jar)
        assert (await victim.get(f"{ROOT}/account")).headers["location"] == f"{ROOT}/signin"
        # Nor can another site open the button for the victim first.
        opened = await victim.get(f"{ROOT}/signin/with/0", headers={"Sec-Fetch-Site": "cross-site"})
        assert opened.status_code == 400 and not victim.cookies.get("ui_started")
        assert (await victim.get(landing)).status_code == 400


async def test_passkeys_through_the_pages(site: Site) -> None:
    await site.register("pia", "pia@example.com")
    authenticator = SoftAuthenticator(origin="http://localhost")  # the RP, not the test host
    options = await site.script("/account/passkeys/options", {}, on="/account")
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json())
    added = await site.script(
        "/account/passkeys", {"webauthn": credential, "name": "Key <b>1</b>"}, on="/account"
    )
    assert added.json() == {"location": f"{ROOT}/account?done=passkey"}
    account = await site.page("/account?done=passkey")
    assert "Key &lt;b&gt;1&lt;/b&gt;" in account.text and "Passkey added." in account.text

    await site.submit("/signout", {}, on="/account")
    request = await site.script("/passkeys/login/options", {}, on="/signin")
    assertion = authenticator.get(request.json())
    signed = await site.script(
        "/passkeys/login",
        {"webauthn": assertion, "returnTo": "https://evil.example/"},
        on="/signin",
    )
    assert signed.json() == {"location": f"{ROOT}/account"}  # not to another site
    assert "eyJ" not in signed.text  # the tokens went into cookies
    account = await site.page("/account")
    assert account.status_code == 200 and "pia@example.com" in account.text

    passkey_id = re.search(r"/account/passkeys/([\w-]+)/remove", account.text)
    assert passkey_id
    removed = await site.submit(
        f"/account/passkeys/{passkey_id.group(1)}/remove", {}, on="/account"
    )
    assert removed.headers["location"] == f"{ROOT}/account?done=passkey-removed"
    assert "Key &lt;b&gt;1" not in (await site.page("/account")).text


async def test_the_json_routes_want_this_sites_token(site: Site) -> None:
    without = await site.browser.post(f"{ROOT}/passkeys/login/options", json={})
    assert without.status_code == 400 and without.json()["code"] == "InvalidRequest"
    assert without.headers["content-security-policy"].startswith("default-src 'none'")
    elsewhere = await site.script(
        "/passkeys/login/options", {}, on="/signin", headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 400
    token = site.csrf(await site.page("/signin"))
    as_form = await site.browser.post(
        f"{ROOT}/passkeys/login/options", data={"csrf": token}, headers={"X-CSRF-Token": token}
    )
    assert as_form.status_code == 415
    broken = await site.browser.post(
        f"{ROOT}/passkeys/login",
        content=b"{not json",
        headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
    )
    assert broken.status_code == 400 and broken.json()["code"] == "InvalidRequest"
    anonymous = await site.script("/account/passkeys/options", {}, on="/signin")
    assert anonymous.status_code == 400 and "sign in first" in anonymous.json()["message"]
