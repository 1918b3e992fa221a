"""The hosted pages a user sees: sign in (a password, then a TOTP or recovery code), register,
forgotten password and the mailed links (reset, verify, enroll), and the account page
(sessions with revoke, password change, two-factor enrolment with a QR code, recent security
activity). Each handler reads a form, calls the server or a login service's protocol
endpoint, and renders a template: the rules stay in the server and the services.

A mailed link's token is moved into a cookie at once and the browser sent on to a page with a
button: the token leaves the address bar (and any history or log of it), and a mail
scanner that follows links does not spend it.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import (
    AccountsError,
    InvalidRequest,
    StoreUnavailable,
    TwoFactorCodeRequired,
)
from ...services import OffersSignInLinks, SignInLink
from ...types import LoginResult
from ..errors import status_for
from .web import BACK_ACCESS, BACK_REFRESH, LINK, MFA, STARTED, Page, Signed, quoted

__all__ = ["user_routes"]

Handler = Callable[[Request], Awaitable[Response]]
#: The accounts-js paths of the password service's mailed links (its `MailSettings.paths`):
#: with `site_url` set to the pages' root, its mails open these pages.
#: The magic-link service's path (`/magic-link/`) likewise.
_LINKS = ("reset-password", "enroll-account", "verify-email", "magic-link")
_MAGIC = ("magicLink", "/magiclink/requestMagicLinkEmail")
_PASSKEY_LOGIN = ("webauthn", "login/options")
_PASSKEYS = ("webauthn", "credentials", "GET")


def user_routes(page: Page) -> list[Route]:
    pages = _UserPages(page)
    return [
        Route("/", pages.home, methods=["GET"]),
        Route("/signin", pages.signin, methods=["GET", "POST"]),
        Route("/signin/code", pages.code, methods=["GET", "POST"]),
        Route("/signin/link", pages.request_link, methods=["POST"]),
        Route("/magic-link", pages.magic_link, methods=["GET", "POST"]),
        Route("/oauth", pages.oauth, methods=["GET"]),
        Route("/signin/with/{number:int}", pages.sign_in_with, methods=["GET"]),
        Route("/signout", pages.signout, methods=["POST"]),
        Route("/register", pages.register, methods=["GET", "POST"]),
        Route("/forgot", pages.forgot, methods=["GET", "POST"]),
        *(Route(f"/{path}/{{token}}", pages.link, methods=["GET"]) for path in _LINKS),
        Route("/reset-password", pages.reset, methods=["GET", "POST"]),
        Route("/enroll-account", pages.reset, methods=["GET", "POST"]),
        Route("/verify-email", pages.verify, methods=["GET", "POST"]),
        Route("/account", pages.account, methods=["GET"]),
        Route("/account/sessions/{sid}/revoke", pages.revoke, methods=["POST"]),
        Route("/account/sessions/revoke-others", pages.revoke_others, methods=["POST"]),
        Route("/account/password", pages.password, methods=["POST"]),
        Route("/account/verification-mail", pages.verification_mail, methods=["POST"]),
        Route("/account/passkeys/{credential_id}/remove", pages.remove_passkey, methods=["POST"]),
        Route("/account/two-factor", pages.two_factor, methods=["GET", "POST"]),
    ]


class _UserPages:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.server = page.server

    def _failed(
        self, request: Request, template: str, error: AccountsError, **context: Any
    ) -> Response:
        """The same page again, with the error's message and the error's status."""
        if isinstance(error, StoreUnavailable):
            return self.page.message(
                request, status=503, heading="Try again soon", text=error.message
            )
        return self.page.render(
            request, template, status=status_for(error), error=error.message, **context
        )

    def _refused(self, request: Request, error: AccountsError, heading: str) -> Response:
        """A page saying what was refused and why, with the error's status."""
        return self._failed(request, "message.html", error, heading=heading, text=error.message)

    def _not_started(self, request: Request) -> Response:
        return self.page.message(
            request,
            status=400,
            heading="Not signed in",
            text="Start signing in from the sign-in page of this site.",
            signin=True,
        )

    async def _signed(self, request: Request) -> Signed | Response:
        signed = await self.page.signed_in(request)
        if signed is None:
            return self.page.redirect(request, f"{self.page.root}/signin")
        return signed

    async def home(self, request: Request) -> Response:
        signed = await self.page.signed_in(request)
        target = "account" if signed is not None else "signin"
        return self.page.redirect(request, f"{self.page.root}/{target}", signed)

    # -- signing in and out -----------------------------------------------------------------

    async def signin(self, request: Request) -> Response:
        return_to = self.page.return_to(request.query_params.get("return_to"))
        if request.method == "GET":
            return self._signin_page(request, return_to=return_to)
        try:
            form = await self.page.form(request)
            return_to = self.page.return_to(form.get("return_to"))
            params = {"user": form.get("user", ""), "password": form.get("password", "")}
            result = await self.server.login_with_service(
                "password", params, self.page.info(request)
            )
        except TwoFactorCodeRequired as needed:
            return self._second_step(request, needed, return_to)
        except AccountsError as error:
            if isinstance(error, StoreUnavailable):
                return self._failed(request, "signin.html", error)
            return self._signin_page(
                request, return_to=return_to, error=error.message, status=status_for(error)
            )
        return self._signed_in(request, result, return_to)

    def _sign_in_links(self) -> list[SignInLink]:
        return [
            link
            for service in self.server.services.values()
            if isinstance(service, OffersSignInLinks)
            for link in service.sign_in_links()
        ]

    def _signin_page(self, request: Request, *, status: int = 200, **context: Any) -> Response:
        """The sign-in page, with a button for each other way in the services offer."""
        links = self._sign_in_links()
        return self.page.render(
            request,
            "signin.html",
            status=status,
            links=links,
            magic=self.page.endpoint(*_MAGIC) is not None,
            passkeys=self.page.endpoint(*_PASSKEY_LOGIN) is not None,
            **context,
        )

    def _second_step(
        self, request: Request, needed: TwoFactorCodeRequired, return_to: str
    ) -> Response:
        response = self.page.redirect(
            request, f"{self.page.root}/signin/code?return_to={quoted(return_to)}"
        )
        self.page.cookie(request, response, MFA, needed.mfa_token, max_age=300)
        return response

    async def request_link(self, request: Request) -> Response:
        try:
            form = await self.page.form(request)
            await self.page.call(request, *_MAGIC, {"email": form.get("email", "").strip()})
        except AccountsError as error:
            if isinstance(error, StoreUnavailable):
                return self._failed(request, "signin.html", error)
            return self._signin_page(
                request,
                return_to=self.page.return_to(None),
                error=error.message,
                error_field="link",
                status=status_for(error),
            )
        # The same answer whether or not the address has an account.
        return self.page.message(
            request,
            heading="Check your mail",
            text="If an account has that address, a sign-in link is on its way. "
            "It works once, for 15 minutes.",
        )

    async def magic_link(self, request: Request) -> Response:
        token = request.cookies.get(LINK)
        if not token:
            return self._link_used(request)
        if request.method == "GET":
            return self.page.render(request, "magic_link.html")
        home = self.page.return_to(None)
        try:
            await self.page.form(request)
            result = await self.server.login_with_service(
                "magicLink", {"token": token}, self.page.info(request)
            )
        except TwoFactorCodeRequired as needed:
            response = self._second_step(request, needed, home)
        except AccountsError as error:
            return self._refused(request, error, "Not signed in")
        else:
            response = self._signed_in(request, result, home)
        self.page.cookie(request, response, LINK, None, max_age=None)
        return response

    async def sign_in_with(self, request: Request) -> Response:
        """A sign-in button: mark this browser as one that started a redirect sign-in, then
        on to the service's start (only to a path a service offers: no open redirect).

        A link, not a form: Chrome applies a form's `form-action` to its redirects, which end
        at the provider. Only a link followed from this site counts (Fetch Metadata: the
        browser says where a navigation came from), so no other site can open it for a victim
        and then hand the victim its own one-time code."""
        if request.headers.get("sec-fetch-site") != "same-origin":
            return self._not_started(request)
        links = self._sign_in_links()
        number = request.path_params["number"]
        if not 0 <= number < len(links):
            return self.page.message(
                request, status=404, heading="Not found", text="No such sign-in."
            )
        response = self.page.redirect(request, f"{self.page.api_root}{links[number].path}")
        self.page.cookie(request, response, STARTED, secrets.token_urlsafe(16), max_age=600)
        return response

    async def oauth(self, request: Request) -> Response:
        """Where the OpenID Connect service sends the browser back (its `frontend_url`) with a
        one-time code, exchanged here at once for the session's tokens; only in a browser that
        followed a sign-in button from this site (`sign_in_with`), and once: a code obtained
        elsewhere signs nobody in."""
        home = self.page.return_to(None)
        response: Response
        if not request.cookies.get(STARTED):
            return self._not_started(request)
        try:
            answer = await self.page.call(
                request, "oauth", "exchange", {"code": request.query_params.get("code", "")}
            )
            if not isinstance(answer, LoginResult):
                raise InvalidRequest("the sign-in did not complete")
            response = self._signed_in(request, answer, home)
        except TwoFactorCodeRequired as needed:
            response = self._second_step(request, needed, home)
        except AccountsError as error:
            response = self._refused(request, error, "Not signed in")
        self.page.cookie(request, response, STARTED, None, max_age=None)  # one landing
        return response

    def _link_used(self, request: Request) -> Response:
        return self.page.message(
            request,
            status=400,
            heading="Link used",
            text="Open the link from your mail again.",
        )

    def _signed_in(self, request: Request, result: LoginResult, return_to: str) -> Response:
        response = self.page.redirect(request, return_to)
        self.page.sign_in(request, response, result.tokens)
        self.page.cookie(request, response, MFA, None, max_age=None)
        return response

    async def code(self, request: Request) -> Response:
        return_to = self.page.return_to(request.query_params.get("return_to"))
        if not request.cookies.get(MFA):
            return self.page.redirect(request, f"{self.page.root}/signin")
        if request.method == "GET":
            return self.page.render(request, "code.html", return_to=return_to)
        try:
            form = await self.page.form(request)
            return_to = self.page.return_to(form.get("return_to"))
            params = {"mfaToken": request.cookies[MFA], "code": form.get("code", "").strip()}
            result = await self.server.login_with_mfa(params, self.page.info(request))
        except AccountsError as error:
            return self._failed(request, "code.html", error, return_to=return_to)
        return self._signed_in(request, result, return_to)

    async def signout(self, request: Request) -> Response:
        try:
            await self.page.form(request)
            signed = await self.page.signed_in(request)
            if signed is not None:
                await self.server.logout(signed.access_token)
        except AccountsError as error:
            return self._refused(request, error, "Not signed out")
        back = self.page.stashed(request)
        if back is not None and (signed is None or signed.session.impersonator_id):
            # The end of an impersonation: the admin is themselves again.
            target = f"{self.page.root}/admin" + (f"/users/{signed.user.id}" if signed else "")
            response = self.page.redirect(request, target)
            self.page.sign_in(request, response, back)
            for name in (BACK_ACCESS, BACK_REFRESH):
                self.page.cookie(request, response, name, None, max_age=None)
            return response
        response = self.page.redirect(request, f"{self.page.root}/signin")
        self.page.sign_out(request, response)
        return response

    async def register(self, request: Request) -> Response:
        if request.method == "GET":
            return self.page.render(request, "register.html", values={})
        values: dict[str, str] = {}
        try:
            form = await self.page.form(request)
            values = {k: form.get(k, "").strip() for k in ("username", "email")}
            user = {k: v for k, v in values.items() if v}
            answer = await self.page.call(
                request,
                "password",
                "register",
                {"user": {**user, "password": form.get("password", "")}},
            )
            if not (isinstance(answer, Mapping) and answer.get("userId")):
                # The service answers alike for a new and a taken address (its
                # `ambiguous_registration`): so does the page, and signs nobody in.
                return self.page.message(
                    request,
                    heading="Check your mail",
                    text="To finish, open the link we sent to your address.",
                )
            params = {
                "user": user.get("username") or user.get("email", ""),
                "password": form.get("password", ""),
            }
            result = await self.server.login_with_service(
                "password", params, self.page.info(request)
            )
        except AccountsError as error:
            return self._failed(request, "register.html", error, values=values)
        return self._signed_in(request, result, f"{self.page.root}/account")

    # -- forgotten passwords and mailed links -----------------------------------------------

    async def forgot(self, request: Request) -> Response:
        if request.method == "GET":
            return self.page.render(request, "forgot.html")
        try:
            form = await self.page.form(request)
            await self.page.call(
                request,
                "password",
                "sendResetPasswordEmail",
                {"email": form.get("email", "").strip()},
            )
        except AccountsError as error:
            return self._failed(request, "forgot.html", error)
        # The same answer whether or not the address has an account.
        return self.page.message(
            request,
            heading="Check your mail",
            text="If an account has that address, a link to choose a new "
            "password is on its way. It works for 60 minutes.",
        )

    async def link(self, request: Request) -> Response:
        path = request.url.path.rsplit("/", 2)[-2]
        response = self.page.redirect(request, f"{self.page.root}/{path}")
        self.page.cookie(request, response, LINK, request.path_params["token"], max_age=1800)
        return response

    async def reset(self, request: Request) -> Response:
        token = request.cookies.get(LINK)
        enroll = request.url.path.endswith("/enroll-account")
        template = "reset.html"
        if not token:
            return self._link_used(request)
        if request.method == "GET":
            return self.page.render(request, template, enroll=enroll)
        try:
            form = await self.page.form(request)
            await self.page.call(
                request,
                "password",
                "resetPassword",
                {"token": token, "newPassword": form.get("password", "")},
            )
        except AccountsError as error:
            return self._failed(request, template, error, enroll=enroll)
        response = self.page.message(
            request,
            heading="Password set",
            text="Sign in with your new password.",
            signin=True,
        )
        self.page.cookie(request, response, LINK, None, max_age=None)
        self.page.sign_out(request, response)  # every session of the user ended
        return response

    async def verify(self, request: Request) -> Response:
        token = request.cookies.get(LINK)
        if not token:
            return self._link_used(request)
        if request.method == "GET":
            return self.page.render(request, "verify.html")
        try:
            await self.page.form(request)
            await self.page.call(request, "password", "verifyEmail", {"token": token})
        except AccountsError as error:
            return self._refused(request, error, "Not verified")
        response = self.page.message(
            request,
            heading="Address verified",
            text="Thank you: your address is verified.",
        )
        self.page.cookie(request, response, LINK, None, max_age=None)
        return response

    # -- the account page -------------------------------------------------------------------

    async def account(self, request: Request, **notice: Any) -> Response:
        try:
            signed = await self._signed(request)
            if isinstance(signed, Response):
                return signed
            sessions = await self.server.list_own_sessions(signed.access_token)
            activity = await self.server.list_own_audit(signed.access_token, limit=10)
            console = await (await self.server.admin(signed.access_token)).allowed("dashboard.view")
            passkeys: list[dict[str, Any]] | None = None
            if self.page.endpoint(*_PASSKEYS) is not None:
                listed = await self.page.call(
                    request, *_PASSKEYS[:2], {}, access_token=signed.access_token, method="GET"
                )
                passkeys = [_passkey(p) for p in listed] if isinstance(listed, list) else []
            status: Mapping[str, Any] | None = None
            if self.page.endpoint("password", "twoFactorStatus") is not None:
                found = await self.page.call(
                    request, "password", "twoFactorStatus", {}, access_token=signed.access_token
                )
                status = found if isinstance(found, Mapping) else None
        except AccountsError as error:
            return self._refused(request, error, "Not available")
        return self.page.render(
            request,
            "account.html",
            signed=signed,
            sessions=sessions,
            activity=activity,
            two_factor=status,
            console=console,
            passkeys=passkeys,
            status=notice.pop("status", 200),
            done=request.query_params.get("done"),
            **notice,
        )

    async def _act(
        self, request: Request, act: Callable[[Signed, dict[str, str]], Awaitable[str]]
    ) -> Response:
        """A form of the account page: done, then the page again with what happened."""
        try:
            signed = await self._signed(request)
            if isinstance(signed, Response):
                return signed
            form = await self.page.form(request)
            done = await act(signed, form)
        except AccountsError as error:
            return await self.account(request, error=error.message, status=status_for(error))
        response = self.page.redirect(
            request, f"{self.page.root}/account?done={quoted(done)}", signed
        )
        return response

    async def revoke(self, request: Request) -> Response:
        async def act(signed: Signed, form: dict[str, str]) -> str:
            await self.server.revoke_own_session(signed.access_token, request.path_params["sid"])
            return "revoked"

        return await self._act(request, act)

    async def revoke_others(self, request: Request) -> Response:
        async def act(signed: Signed, form: dict[str, str]) -> str:
            await self.server.revoke_other_sessions(signed.access_token)
            return "revoked"

        return await self._act(request, act)

    async def password(self, request: Request) -> Response:
        async def act(signed: Signed, form: dict[str, str]) -> str:
            if form.get("new", "") != form.get("confirm", ""):
                raise InvalidRequest("the new passwords differ")
            await self.page.call(
                request,
                "password",
                "changePassword",
                {"oldPassword": form.get("old", ""), "newPassword": form.get("new", "")},
                access_token=signed.access_token,
            )
            return "password"

        return await self._act(request, act)

    async def verification_mail(self, request: Request) -> Response:
        async def act(signed: Signed, form: dict[str, str]) -> str:
            address = form.get("email", "")
            if not any(e.address == address and not e.verified for e in signed.user.emails):
                raise InvalidRequest("that is not an unverified address of yours")
            await self.page.call(request, "password", "sendVerificationEmail", {"email": address})
            return "mailed"

        return await self._act(request, act)

    async def remove_passkey(self, request: Request) -> Response:
        async def act(signed: Signed, form: dict[str, str]) -> str:
            await self.page.call(
                request,
                "webauthn",
                "credentials/{credential_id}",
                {},
                access_token=signed.access_token,
                method="DELETE",
                path_params={"credential_id": request.path_params["credential_id"]},
            )
            return "passkey-removed"

        return await self._act(request, act)

    async def two_factor(self, request: Request) -> Response:
        """GET: a new secret, as a QR code and as text; POST: turn it on with a code, and
        show the recovery codes, once. A mistyped code shows the same secret again with the
        error: the user has scanned it already."""
        try:
            signed = await self._signed(request)
            if isinstance(signed, Response):
                return signed
            if request.method == "GET":
                answer = await self.page.call(
                    request, "password", "twoFactorSecret", {}, access_token=signed.access_token
                )
                found = answer.get("secret") if isinstance(answer, Mapping) else None
                if not isinstance(found, Mapping) or not isinstance(found.get("base32"), str):
                    raise InvalidRequest("two-factor authentication is not available here")
                return self._enrolment(request, signed, found["base32"], found["otpauth_url"])
            form = await self.page.form(request)
        except AccountsError as error:
            return await self.account(request, error=error.message, status=status_for(error))
        secret, url = form.get("secret", ""), form.get("otpauth", "")
        try:
            answer = await self.page.call(
                request,
                "password",
                "twoFactorSet",
                {"secret": secret, "code": form.get("code", "").strip()},
                access_token=signed.access_token,
            )
        except StoreUnavailable as error:
            return self._failed(request, "message.html", error)
        except AccountsError as error:
            if not url.startswith("otpauth://totp/") or len(url) > 1024:
                return await self.account(request, error=error.message, status=status_for(error))
            return self._enrolment(
                request, signed, secret, url, error=error.message, status=status_for(error)
            )
        codes = answer.get("recoveryCodes", []) if isinstance(answer, Mapping) else []
        return self.page.render(request, "recovery_codes.html", signed=signed, codes=codes)

    def _enrolment(
        self, request: Request, signed: Signed, secret: str, url: object, **context: Any
    ) -> Response:
        import segno  # only for this page

        qr = segno.make(str(url), error="m").svg_inline(scale=4, title="QR")
        return self.page.render(
            request, "two_factor.html", signed=signed, secret=secret, otpauth=url, qr=qr, **context
        )


def _passkey(view: Mapping[str, Any]) -> dict[str, Any]:
    """The WebAuthn service's view of a passkey, its epoch-millisecond times as datetimes."""

    def moment(ms: object) -> datetime | None:
        return datetime.fromtimestamp(ms / 1000, UTC) if isinstance(ms, int | float) else None

    return {
        "id": view.get("id"),
        "name": view.get("name"),
        "created": moment(view.get("createdAt")),
        "used": moment(view.get("lastUsedAt")),
        "synced": bool(view.get("backedUp")),
    }
