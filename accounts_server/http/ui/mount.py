"""The hosted pages as one app mounted in the accounts app, with its own error pages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...deadline import store_deadline
from ...errors import AccountsError, StoreUnavailable
from ...server import AccountsServer
from ..errors import status_for
from ..observe import ROUTE_KEY
from ..request import Network
from .config import UIConfig
from .console import console_routes
from .pages import user_routes
from .passkeys import passkey_routes
from .web import Page

__all__ = ["ui_mount"]


def ui_mount(
    server: AccountsServer,
    config: UIConfig,
    *,
    root: str,
    api_root: str,
    proxies: Sequence[Network],
    deadline: float,
) -> Mount:
    """The pages at `root` (`/accounts/ui`), as one mounted app with its own error pages."""
    page = Page(server, config, root=root, api_root=api_root, proxies=proxies)

    async def failed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AccountsError)
        heading = "Try again soon" if isinstance(exc, StoreUnavailable) else "Something is wrong"
        return page.message(request, status=status_for(exc), heading=heading, text=exc.message)

    async def not_found(request: Request, exc: Exception) -> Response:
        return page.message(request, status=404, heading="Not found", text="There is no such page.")

    async def wrong_method(request: Request, exc: Exception) -> Response:
        return page.message(
            request,
            status=405,
            heading="Not here",
            text="This page does not take that kind of request.",
        )

    app = Starlette(
        routes=[
            *user_routes(page),
            *console_routes(page),
            *passkey_routes(page),
            Mount("/static", StaticFiles(directory=Path(__file__).parent / "static")),
        ],
        exception_handlers={AccountsError: failed, 404: not_found, 405: wrong_method},
    )
    sections = {
        route.path.split("/")[1] for route in app.routes if isinstance(route, Route | Mount)
    }
    return Mount(root, app=_Pages(app, page, deadline, sections))


class _Pages:
    """Every page's store calls share one `store_deadline`, as an API route's do; and every
    answer carries the tokens of a refresh the request made, error pages included (a handler
    that set them itself is left alone)."""

    def __init__(self, app: ASGIApp, page: Page, seconds: float, sections: set[str]) -> None:
        self.app = app
        self.page = page
        self.seconds = seconds
        #: The access log and metrics name a page by its first segment (`/accounts/ui/admin`):
        #: a bounded set, never an id or a token from the path.
        self.sections = sections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # one dict for every copy of the scope below
        section = str(scope.get("path", "")).removeprefix(self.page.root).split("/")[1:2]
        if section and section[0] in self.sections:
            scope[ROUTE_KEY] = f"{self.page.root}/{section[0]}"

        async def renewing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k == b"set-cookie" and v.startswith(b"ui_at=") for k, v in headers):
                    headers += self.page.renewal_headers(Request(scope))
                if not any(k == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))  # static files too
                message = {**message, "headers": headers}
            await send(message)

        with store_deadline(self.seconds):
            await self.app(scope, receive, renewing)
