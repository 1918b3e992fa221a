"""The passkey ceremonies of the hosted pages: the only JSON the pages speak, because only a
script can call the browser's WebAuthn API (static/passkeys.js). Each route takes the page's
CSRF token in a header, calls the WebAuthn service's protocol endpoint with the session from
the cookies, and answers JSON; a signed-in browser gets its tokens as cookies, never in the
answer. Without the WebAuthn service installed these routes answer 400.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import AccountsError, InvalidRequest, TwoFactorCodeRequired
from ...types import LoginResult
from ..errors import error_response
from .web import MFA, Page

__all__ = ["passkey_routes"]

SERVICE = "webauthn"


def passkey_routes(page: Page) -> list[Route]:
    ceremonies = _Ceremonies(page)
    return [
        Route("/passkeys/login/options", ceremonies.login_options, methods=["POST"]),
        Route("/passkeys/login", ceremonies.login, methods=["POST"]),
        Route("/account/passkeys/options", ceremonies.register_options, methods=["POST"]),
        Route("/account/passkeys", ceremonies.register, methods=["POST"]),
    ]


class _Ceremonies:
    def __init__(self, page: Page) -> None:
        self.page = page

    def _answer(self, body: object) -> JSONResponse:
        return JSONResponse(body, headers=self.page.headers)

    def _failed(self, error: AccountsError) -> Response:
        response = error_response(error)
        response.headers.update(self.page.headers)
        return response

    async def login_options(self, request: Request) -> Response:
        try:
            await self.page.json(request)
            options = await self.page.call(request, SERVICE, "login/options", {})
        except AccountsError as error:
            return self._failed(error)
        return self._answer(options)

    async def login(self, request: Request) -> Response:
        """`{webauthn: <assertion>}` → `{location}`, the tokens in cookies."""
        try:
            body = await self.page.json(request)
            return_to = self.page.return_to(body.get("returnTo"))
            result = await self.page.server.login_with_service(
                SERVICE, {"webauthn": body.get("webauthn")}, self.page.info(request)
            )
        except TwoFactorCodeRequired as needed:
            response = self._answer({"location": f"{self.page.root}/signin/code"})
            self.page.cookie(request, response, MFA, needed.mfa_token, max_age=300)
            return response
        except AccountsError as error:
            return self._failed(error)
        assert isinstance(result, LoginResult)
        response = self._answer({"location": return_to})
        self.page.sign_in(request, response, result.tokens)
        return response

    async def register_options(self, request: Request) -> Response:
        try:
            await self.page.json(request)
            signed = await self.page.signed_in(request)
            if signed is None:
                raise InvalidRequest("sign in first")
            options = await self.page.call(
                request, SERVICE, "register/options", {}, access_token=signed.access_token
            )
        except AccountsError as error:
            return self._failed(error)
        response = self._answer(options)
        self.page.renew(request, response, signed)
        return response

    async def register(self, request: Request) -> Response:
        """`{webauthn: <credential>, name}` → `{location}` (the account page, saying so)."""
        try:
            body = await self.page.json(request)
            signed = await self.page.signed_in(request)
            if signed is None:
                raise InvalidRequest("sign in first")
            await self.page.call(
                request,
                SERVICE,
                "register/verify",
                {"webauthn": body.get("webauthn"), "name": body.get("name") or "Passkey"},
                access_token=signed.access_token,
            )
        except AccountsError as error:
            return self._failed(error)
        response = self._answer({"location": f"{self.page.root}/account?done=passkey"})
        self.page.renew(request, response, signed)
        return response
