"""The hosted pages without a browser: real HTTP through the ASGI app with a cookie jar,
forms posted as a browser posts them (CSRF token from the page), mail from the real SMTP
server. tests/browser/ drives the same pages in Chromium."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest

from accounts_password import MailSettings, PasswordService
from accounts_server import AccountsServer, AuditConfig, AuditQuery, SealingKeys
from accounts_server.http import create_app
from accounts_server.http.ui import UIConfig

from ..conftest import Clock, MakeServer
from ..helpers import PASSWORD, SMTPServer

ROOT = "/accounts/ui"


@dataclass
class Site:
    server: AccountsServer
    browser: httpx.AsyncClient
    smtp: SMTPServer

    async def page(self, path: str) -> httpx.Response:
        return await self.browser.get(f"{ROOT}{path}")

    async def submit(
        self, path: str, fields: dict[str, str], *, on: str | None = None
    ) -> httpx.Response:
        """Post a form as the page `on` (default: `path`) holds it: with its CSRF token."""
        shown = await self.page(on or path)
        found = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert found, shown.text
        return await self.browser.post(f"{ROOT}{path}", data={"csrf": found.group(1), **fields})

    async def register(self, username: str, email: str, password: str = PASSWORD) -> None:
        registered = await self.submit(
            "/register", {"username": username, "email": email, "password": password}
        )
        assert registered.status_code == 303, registered.text
        assert registered.headers["location"] == f"{ROOT}/account"


@pytest.fixture
async def site(make_server: MakeServer, smtp: SMTPServer) -> AsyncIterator[Site]:
    smtp.checkpoint()
    service = PasswordService(mailer=smtp.mailer(), mail=MailSettings(site_url=f"http://t{ROOT}"))
    server = make_server(services=[service], audit=AuditConfig(), sealing=SealingKeys.generate())
    app = create_app(server, ui=UIConfig(return_to_origins=("https://app.example",)))
    transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as browser:
        yield Site(server, browser, smtp)


def assert_safe_page(response: httpx.Response) -> None:
    policy = response.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in response.text and " style=" not in response.text


async def test_register_sign_out_and_in_and_see_the_account(site: Site) -> None:
    await site.register("ada", "ada@example.com")
    account = await site.page("/account")
    assert account.status_code == 200
    assert_safe_page(account)
    assert "ada@example.com" in account.text and "(this one)" in account.text
    assert "eyJ" not in account.text  # no token in the page source
    cookies = {c.name: c for c in site.browser.cookies.jar}
    assert cookies["ui_at"].has_nonstandard_attr("HttpOnly")
    assert cookies["ui_at"].path == ROOT

    signed_out = await site.submit("/signout", {}, on="/account")
    assert signed_out.headers["location"] == f"{ROOT}/signin"
    assert (await site.page("/account")).headers["location"] == f"{ROOT}/signin"

    wrong = await site.submit("/signin", {"user": "ada", "password": "not it at all"})
    assert wrong.status_code == 401 and "Invalid credentials" in wrong.text
    nobody = await site.submit("/signin", {"user": "nobody", "password": "not it at all"})
    assert nobody.status_code == 401 and nobody.text.count("Invalid credentials") == 1
    signed_in = await site.submit("/signin", {"user": "ADA@example.com", "password": PASSWORD})
    assert signed_in.headers["location"] == f"{ROOT}/account"
    assert (await site.page("/account")).status_code == 200


async def test_a_form_without_its_token_or_from_another_site_is_refused(site: Site) -> None:
    await site.register("bo", "bo@example.com")
    forged = await site.browser.post(f"{ROOT}/signout", data={"csrf": "guess"})
    assert forged.status_code == 400 and "expired" in forged.text
    shown = await site.page("/account")
    token = re.search(r'name="csrf" value="([^"]+)"', shown.text)
    assert token
    elsewhere = await site.browser.post(
        f"{ROOT}/signout", data={"csrf": token.group(1)}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 400
    assert (await site.page("/account")).status_code == 200  # still signed in


async def test_markup_in_a_username_renders_inert(site: Site) -> None:
    await site.register("<img src=x onerror=alert(1)>", "x@example.com")
    account = await site.page("/account")
    assert "<img src=x" not in account.text
    assert html.escape("<img src=x onerror=alert(1)>") in account.text


async def test_return_to_only_to_configured_origins(site: Site) -> None:
    await site.register("cy", "cy@example.com")
    await site.submit("/signout", {}, on="/account")
    for asked, lands in (
        ("https://app.example/after", "https://app.example/after"),
        ("https://evil.example/", f"{ROOT}/account"),
        ("//evil.example/", f"{ROOT}/account"),
        ("/accounts/ui/account", "/accounts/ui/account"),
    ):
        shown = await site.browser.get(f"{ROOT}/signin", params={"return_to": asked})
        token = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert token
        done = await site.browser.post(
            f"{ROOT}/signin",
            data={"csrf": token.group(1), "user": "cy", "password": PASSWORD, "return_to": asked},
        )
        assert done.headers["location"] == lands
        await site.submit("/signout", {}, on="/account")


async def test_two_factor_enrolment_then_a_sign_in_with_the_code(site: Site) -> None:
    await site.register("di", "di@example.com")
    enrol = await site.page("/account/two-factor")
    assert "<svg" in enrol.text  # the QR code, server-rendered
    secret = re.search(r'<code id="secret">([A-Z2-7]+)</code>', enrol.text)
    assert secret
    totp = pyotp.TOTP(secret.group(1))
    token = re.search(r'name="csrf" value="([^"]+)"', enrol.text)
    otpauth = re.search(r'name="otpauth" value="([^"]+)"', enrol.text)
    assert token and otpauth
    fields = {"csrf": token.group(1), "secret": secret.group(1), "otpauth": otpauth.group(1)}
    typo = await site.browser.post(f"{ROOT}/account/two-factor", data={**fields, "code": "000"})
    assert typo.status_code in (400, 401, 422), typo.text
    assert f'<code id="secret">{secret.group(1)}</code>' in typo.text  # the scanned one, kept
    assert 'aria-invalid="true"' in typo.text and "<svg" in typo.text
    codes_page = await site.browser.post(
        f"{ROOT}/account/two-factor", data={**fields, "code": totp.now()}
    )
    assert codes_page.status_code == 200, codes_page.text
    codes = re.findall(r"<li><code>([^<]+)</code></li>", codes_page.text)
    assert len(codes) == 10

    await site.submit("/signout", {}, on="/account")
    first = await site.submit("/signin", {"user": "di", "password": PASSWORD})
    assert first.headers["location"].startswith(f"{ROOT}/signin/code")
    assert "ui_mfa" in {c.name for c in site.browser.cookies.jar}
    wrong = await site.submit("/signin/code", {"code": "000000"})
    assert wrong.status_code == 401
    done = await site.submit("/signin/code", {"code": codes[0]})
    assert done.headers["location"] == f"{ROOT}/account"
    account = await site.page("/account")
    assert "9 recovery codes left" in account.text


async def test_revoking_another_session_holds_on_its_next_api_call(site: Site) -> None:
    await site.register("ed", "ed@example.com")
    other = await site.browser.post(
        "/accounts/password/authenticate", json={"user": "ed", "password": PASSWORD}
    )
    api_token = other.json()["tokens"]["accessToken"]
    sid = other.json()["sessionId"]
    account = await site.page("/account")
    assert f"/account/sessions/{sid}/revoke" in account.text
    revoked = await site.submit(f"/account/sessions/{sid}/revoke", {}, on="/account")
    assert revoked.headers["location"] == f"{ROOT}/account?done=revoked"
    user = await site.browser.get(
        "/accounts/user", headers={"Authorization": f"Bearer {api_token}"}
    )
    assert user.json() is None


async def test_forgotten_password_by_the_mailed_link(site: Site) -> None:
    await site.register("flo", "flo@example.com")
    await site.submit("/signout", {}, on="/account")
    said = await site.submit("/forgot", {"email": "flo@example.com"})
    unknown = await site.submit("/forgot", {"email": "nobody@example.com"})
    assert said.status_code == unknown.status_code == 200
    assert said.text.replace("nobody", "flo") == unknown.text.replace("nobody", "flo")
    message = await site.smtp.wait_for("flo@example.com")
    token = site.smtp.link_token(message)
    landed = await site.browser.get(f"{ROOT}/reset-password/{token}")
    assert landed.headers["location"] == f"{ROOT}/reset-password"  # the token leaves the URL
    form = await site.page("/reset-password")
    assert token not in form.text
    reset = await site.submit("/reset-password", {"password": "a whole new passphrase"})
    assert reset.status_code == 200 and "Password set" in reset.text
    assert (await site.page("/reset-password")).status_code == 400  # its cookie is gone
    await site.browser.get(f"{ROOT}/reset-password/{token}")  # the mail's link, once more
    again = await site.submit("/reset-password", {"password": "and another one again"})
    assert again.status_code == 401 and 'class="error"' in again.text  # the link is spent
    signed_in = await site.submit("/signin", {"user": "flo", "password": "a whole new passphrase"})
    assert signed_in.headers["location"] == f"{ROOT}/account"


async def test_an_address_is_verified_from_the_account_page(site: Site) -> None:
    await site.register("gus", "gus@example.com")
    assert "not verified" in (await site.page("/account")).text
    stranger = await site.submit(
        "/account/verification-mail", {"email": "other@example.com"}, on="/account"
    )
    assert stranger.status_code == 400 and "not an unverified address of yours" in stranger.text
    sent = await site.submit(
        "/account/verification-mail", {"email": "gus@example.com"}, on="/account"
    )
    assert sent.headers["location"] == f"{ROOT}/account?done=mailed"
    token = site.smtp.link_token(await site.smtp.wait_for("gus@example.com"))
    landed = await site.browser.get(f"{ROOT}/verify-email/{token}")
    assert landed.headers["location"] == f"{ROOT}/verify-email"
    verified = await site.submit("/verify-email", {})
    assert verified.status_code == 200 and "Address verified" in verified.text
    account = await site.page("/account")
    assert "not verified" not in account.text and "Send the verification mail" not in account.text


async def test_pages_need_no_store_state_to_render_and_404_is_a_page(site: Site) -> None:
    missing = await site.page("/nowhere")
    assert missing.status_code == 404 and "There is no such page" in missing.text
    assert_safe_page(missing)
    css = await site.page("/static/ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["x-content-type-options"] == "nosniff"
    wrong = await site.browser.delete(f"{ROOT}/signin")
    assert wrong.status_code == 405 and "Not here" in wrong.text
    assert_safe_page(wrong)


def test_serve_ui_on_uvicorn(tmp_path: Path) -> None:
    """`serve --ui`: the pages on a real server, and mail links pointing at them."""
    from .test_uvicorn import started

    with started(tmp_path, "--ui", "--ui-return-to", "https://app.example") as (_, base):
        signin = httpx.get(f"{base}{ROOT}/signin")
        assert signin.status_code == 200 and "<h1>Sign in</h1>" in signin.text
        assert "form-action 'self' https://app.example" in signin.headers["content-security-policy"]
        home = httpx.get(f"{base}{ROOT}/", follow_redirects=False)
        assert home.headers["location"] == f"{ROOT}/signin"


def test_ui_from_the_config_file(tmp_path: Path) -> None:
    from .test_uvicorn import started

    config = tmp_path / "accounts.toml"
    config.write_text('ui = true\nui_return_to = ["https://app.example"]\n')
    with started(tmp_path, "--config", str(config)) as (_, base):
        signin = httpx.get(f"{base}{ROOT}/signin")
        assert signin.status_code == 200 and "<h1>Sign in</h1>" in signin.text
        assert "form-action 'self' https://app.example" in signin.headers["content-security-policy"]


def test_serve_refuses_a_return_to_that_is_not_an_origin(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accounts_server.cli",
            "serve",
            "--ui",
            "--ui-return-to",
            "https://app.example/path",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "is not scheme://host[:port]" in result.stderr
    assert not (tmp_path / "accounts.key").exists()  # refused before anything was made


async def test_over_https_the_csrf_cookie_is_one_a_browser_keeps() -> None:
    """A `__Host-` cookie must be Secure with Path=/, or browsers drop it (and every form)."""
    from accounts_server import AccountsServer, KeyRing, TokenConfig
    from accounts_server.stores import SQLiteStore

    from ..helpers import load_key

    server = AccountsServer(
        store=SQLiteStore(":memory:"),
        tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
        services=[PasswordService()],
    )
    app = create_app(server, ui=True)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 1))
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as browser:
        shown = await browser.get(f"{ROOT}/register")
        cookie = next(v for k, v in shown.headers.multi_items() if k == "set-cookie")
        assert cookie.startswith("__Host-ui_csrf=") and "Path=/;" in cookie and "Secure" in cookie
        token = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert token
        fields = {"csrf": token.group(1), "username": "tls", "password": PASSWORD}
        done = await browser.post(f"{ROOT}/register", data=fields, headers={"Origin": "https://t"})
        assert done.status_code == 303, done.text
        access = next(c for c in browser.cookies.jar if c.name == "ui_at")
        assert access.secure and access.path == ROOT
    await server.close()


@pytest.mark.parametrize(
    "target",
    [
        "/\t//evil.example",
        "/\n//evil.example",
        "/\\evil.example",
        "//[",
        "http://[::1",
        "https://app.example\\@evil.example",
    ],
)
async def test_return_to_refuses_what_a_browser_would_read_as_elsewhere(
    site: Site, target: str
) -> None:
    from urllib.parse import quote

    shown = await site.page(f"/signin?return_to={quote(target)}")
    assert shown.status_code == 200
    assert f'name="return_to" value="{ROOT}/account"' in shown.text


async def test_a_refresh_on_an_error_page_still_reaches_the_browser(
    site: Site, clock: Clock
) -> None:
    await site.register("eve", "eve@example.com")
    clock.advance(timedelta(minutes=16))  # the access token has expired: pages refresh
    refused = await site.page("/admin")  # not an admin: an error page, after a refresh
    assert refused.status_code == 403
    assert any(
        c.startswith("ui_rt=") for k, c in refused.headers.multi_items() if k == "set-cookie"
    )
    clock.advance(timedelta(seconds=30))  # past the reuse grace
    assert (await site.page("/account")).status_code == 200  # still signed in
    reused = await site.server.console_admin("test").list_audit(
        AuditQuery(events=("refresh_token_reused",))
    )
    assert reused == []


async def test_the_access_log_names_a_page_never_its_token(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_server(), ui=True, access_log=True)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 1))
    with caplog.at_level("INFO", logger="accounts_server.access"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as browser:
            await browser.get(f"{ROOT}/signin")
            await browser.get(f"{ROOT}/reset-password/a-secret-token")
    lines = [r.getMessage() for r in caplog.records if r.name == "accounts_server.access"]
    assert lines == [f"GET {ROOT}/signin 200", f"GET {ROOT}/reset-password 303"]
