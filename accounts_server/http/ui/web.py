"""What every hosted page shares: templates, forms with CSRF tokens, the signed-in user from
HttpOnly cookies, and the headers that keep a page inert (a strict Content-Security-Policy,
no framing, no caching, no referrer).

Tokens never reach a page or a URL: the access and refresh tokens, a sign-in's `mfaToken` and
a mailed link's token live in HttpOnly cookies scoped to the pages' path. A form carries a
CSRF token equal to a random cookie (double submit; `__Host-` over HTTPS, so no subdomain can
plant one), compared in constant time, and a form whose `Origin` is another site is refused
whatever it carries. Imports Jinja2, which only `ui=True` loads.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import jinja2
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ...errors import (
    InvalidRequest,
    InvalidToken,
    TokenExpired,
    UnsupportedMediaType,
)
from ...server import AccountsServer
from ...services import EndpointHandler, EndpointRequest, ProvidesEndpoints
from ...types import ConnectionInfo, LoginResult, Session, Tokens, User
from ..request import BODY_TIMEOUT, Network, connection_info, read_raw
from .config import UIConfig
from .words import device, event_words

__all__ = ["Page", "Signed", "quoted"]

_TEMPLATES = Path(__file__).parent / "templates"
_FORM_BYTES = 16 * 1024
ACCESS, REFRESH, CSRF, MFA, LINK = "ui_at", "ui_rt", "ui_csrf", "ui_mfa", "ui_link"
#: Marks a browser that started a redirect sign-in here (OpenID Connect), so a one-time code
#: an attacker obtained for their own account cannot sign a victim in (login CSRF).
STARTED = "ui_started"
#: An admin's own tokens while the browser impersonates someone.
BACK_ACCESS, BACK_REFRESH = "ui_back_at", "ui_back_rt"


@dataclass(frozen=True, slots=True)
class Signed:
    """The signed-in user of a page, their session, and the access token that shows it."""

    user: User
    session: Session
    access_token: str
    #: New tokens from a refresh this request made, for the response's cookies.
    renewed: LoginResult | None = None


def _policy(origins: Sequence[str]) -> str:
    """No inline script or style anywhere; forms may post only here (and, as Chrome applies
    `form-action` to a form's redirects, to the origins `return_to` may send a user)."""
    targets = " ".join(("'self'", *origins))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'; form-action {targets}; frame-ancestors 'none'; base-uri 'none'"
    )


class Page:
    """The plumbing the page handlers share; one per app."""

    def __init__(
        self,
        server: AccountsServer,
        config: UIConfig,
        *,
        root: str,
        api_root: str,
        proxies: Sequence[Network],
    ) -> None:
        self.server = server
        self.config = config
        self.root = root
        self.api_root = api_root
        self.proxies = proxies
        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(_TEMPLATES)]
        if config.templates is not None:
            loaders.insert(0, jinja2.FileSystemLoader(config.templates))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters["device"] = device
        self.env.filters["event"] = event_words
        self.headers = {
            "Content-Security-Policy": _policy(config.return_to_origins),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            # Not `no-referrer`: under it Chromium sends `Origin: null` with a form, and the
            # origin check below could not tell our forms from a sandboxed frame's.
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }

    # -- rendering --------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        signed: Signed | None = None,
        **context: Any,
    ) -> HTMLResponse:
        token = request.cookies.get(self._csrf_name(request)) or secrets.token_urlsafe(32)
        html = self.env.get_template(template).render(
            root=self.root,
            title=self.config.title,
            csrf=token,
            signed=signed,
            services=self.server.services,
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=self.headers)
        self.cookie(request, response, self._csrf_name(request), token, max_age=None, strict=True)
        self.renew(request, response, signed)
        return response

    def message(
        self, request: Request, *, heading: str, text: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A page that only says something (`message.html`): a notice, or why not."""
        return self.render(
            request, "message.html", status=status, heading=heading, text=text, **context
        )

    def redirect(self, request: Request, to: str, signed: Signed | None = None) -> Response:
        """303: the browser follows with a GET, so a reload never posts twice."""
        response = RedirectResponse(to, status_code=303, headers=self.headers)
        self.renew(request, response, signed)
        return response

    def cookie(
        self,
        request: Request,
        response: Response,
        name: str,
        value: str | None,
        *,
        max_age: int | None,
        strict: bool = False,
    ) -> None:
        secure = request.url.scheme == "https"
        # A `__Host-` cookie must have Path=/ (browsers drop it otherwise); it is the CSRF
        # token, which says nothing without the page's copy.
        path = "/" if name.startswith("__Host-") else self.root
        if value is None:
            response.delete_cookie(name, path=path, secure=secure, httponly=True)
            return
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            secure=secure,
            httponly=True,
            samesite="strict" if strict else "lax",
        )

    def sign_in(self, request: Request, response: Response, tokens: Tokens) -> None:
        lifetime = int(self.server.session_config.lifetime.total_seconds())
        self.cookie(request, response, ACCESS, tokens.access_token, max_age=lifetime)
        self.cookie(request, response, REFRESH, tokens.refresh_token, max_age=lifetime)

    def sign_out(self, request: Request, response: Response) -> None:
        for name in (ACCESS, REFRESH, MFA, BACK_ACCESS, BACK_REFRESH):
            self.cookie(request, response, name, None, max_age=None)

    def stash(self, request: Request, response: Response, signed: Signed) -> None:
        """Keep the admin's own tokens while the browser acts as someone else."""
        refresh = (
            signed.renewed.tokens.refresh_token
            if signed.renewed is not None
            else request.cookies.get(REFRESH, "")
        )
        lifetime = int(self.server.session_config.lifetime.total_seconds())
        self.cookie(request, response, BACK_ACCESS, signed.access_token, max_age=lifetime)
        self.cookie(request, response, BACK_REFRESH, refresh, max_age=lifetime)

    def stashed(self, request: Request) -> Tokens | None:
        """The admin's tokens kept by `stash`, if this browser is impersonating."""
        access, refresh = request.cookies.get(BACK_ACCESS), request.cookies.get(BACK_REFRESH)
        if not access or not refresh:
            return None
        return Tokens(access_token=access, refresh_token=refresh)

    def renew(self, request: Request, response: Response, signed: Signed | None) -> None:
        if signed is not None and signed.renewed is not None:
            self.sign_in(request, response, signed.renewed.tokens)

    def _csrf_name(self, request: Request) -> str:
        return f"__Host-{CSRF}" if request.url.scheme == "https" else CSRF

    # -- input ------------------------------------------------------------------------------

    def info(self, request: Request) -> ConnectionInfo:
        return connection_info(request, self.proxies)

    async def form(self, request: Request) -> dict[str, str]:
        """A urlencoded form whose CSRF token matches its cookie, from this site.

        Raises:
            InvalidRequest: not a form of ours (no or a wrong token, another site's origin).
        """
        body = await self._body(request, "application/x-www-form-urlencoded")
        try:
            fields = dict(parse_qsl(body.decode(), strict_parsing=bool(body), max_num_fields=32))
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("an unreadable form") from None
        self._check_csrf(request, fields.pop("csrf", ""))
        return fields

    async def json(self, request: Request) -> dict[str, Any]:
        """A page script's JSON object, from this site, with the CSRF token in `X-CSRF-Token`
        (the passkey ceremonies: the browser API needs a script).

        Raises:
            InvalidRequest, UnsupportedMediaType, RequestTooLarge.
        """
        body = await self._body(request, "application/json")
        self._check_csrf(request, request.headers.get("x-csrf-token", ""))
        try:
            found = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequest("an unreadable JSON body") from None
        if not isinstance(found, dict):
            raise InvalidRequest("the body must be a JSON object")
        return found

    async def _body(self, request: Request, kind: str) -> bytes:
        """Raises:
        InvalidRequest: from another site (by host: behind a proxy that ends TLS the scheme
            we see is not the browser's), or cut short; UnsupportedMediaType; RequestTooLarge;
            RequestTimeout.
        """
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.url.netloc:
            raise InvalidRequest("this form was sent from another site")
        given = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if given != kind:
            raise UnsupportedMediaType(f"this takes {kind}")
        try:
            return await read_raw(request, max_bytes=_FORM_BYTES, arrival=BODY_TIMEOUT)
        except ClientDisconnect:
            raise InvalidRequest("the form was cut short") from None

    def _check_csrf(self, request: Request, given: str) -> None:
        expected = request.cookies.get(self._csrf_name(request), "")
        if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
            raise InvalidRequest("this form has expired: reload the page and send it again")

    def return_to(self, value: str | None) -> str:
        """Where to go after signing in: a path of ours, or a configured origin; else home."""
        home = f"{self.root}/account"
        # Browsers drop tabs and newlines from a URL and read `\` as `/`: a value with any of
        # them, or any space or control character, goes home, whatever it would parse to.
        if not value or not value.isprintable() or any(c in value for c in " \\"):
            return home
        try:
            parts = urlsplit(value)
        except ValueError:  # an unbalanced IPv6 bracket, an NFKC-unsafe host
            return home
        if not parts.scheme and not parts.netloc and value.startswith("/"):
            return value if not value.startswith("//") else home
        origin = f"{parts.scheme}://{parts.netloc}"
        return value if origin in self.config.return_to_origins else home

    # -- the signed-in user -----------------------------------------------------------------

    async def signed_in(self, request: Request) -> Signed | None:
        """The user of the cookies' session, refreshing an expired access token; None if
        there is none (or it was revoked: that holds on the next page, as in the API).

        Raises:
            StoreUnavailable.
        """
        access = request.cookies.get(ACCESS)
        if not access:
            return None
        try:
            user, session = await self.server.resume_user_and_session(access)
            return Signed(user, session, access)
        except TokenExpired:
            pass
        except InvalidToken:
            return None
        refresh = request.cookies.get(REFRESH)
        if not refresh:
            return None
        try:
            result = await self.server.refresh_tokens(access, refresh, self.info(request))
            user, session = await self.server.resume_user_and_session(result.tokens.access_token)
        except InvalidToken:
            return None
        # Whatever this request answers, an error page included, must carry the new tokens:
        # the old refresh token is spent, and presented again later it would be a reuse.
        request.state.ui_renewed = result.tokens
        return Signed(user, session, result.tokens.access_token, renewed=result)

    def renewal_headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        """The Set-Cookie headers of a refresh this request made (none if it made none)."""
        tokens = getattr(request.state, "ui_renewed", None)
        if not isinstance(tokens, Tokens):
            return []
        carrier = Response()
        self.sign_in(request, carrier, tokens)
        return [(k, v) for k, v in carrier.raw_headers if k == b"set-cookie"]

    # -- login services' endpoints ----------------------------------------------------------

    def endpoint(
        self, service: str, path: str, method: str | None = None
    ) -> EndpointHandler | None:
        """A service's protocol endpoint (`password`, `register`), if it is installed."""
        found = self.server.services.get(service)
        if not isinstance(found, ProvidesEndpoints):
            return None
        return next(
            (
                e.handler
                for e in found.endpoints()
                if e.path == path and (method is None or e.method == method)
            ),
            None,
        )

    async def call(
        self,
        request: Request,
        service: str,
        path: str,
        body: Mapping[str, Any],
        *,
        access_token: str | None = None,
        method: str | None = None,
        path_params: Mapping[str, str] | None = None,
    ) -> object:
        """Raises:
        InvalidRequest: the service or endpoint is not installed; whatever it raises.
        """
        handler = self.endpoint(service, path, method)
        if handler is None:
            raise InvalidRequest(f"{service} {path} is not available here")
        call = EndpointRequest(
            body=body,
            info=self.info(request),
            access_token=access_token,
            path_params=path_params or {},
        )
        return await self.server.call_endpoint(handler, call)


def quoted(value: str) -> str:
    """A path (with its query) as one `return_to` query value."""
    return quote(value, safe="/")
