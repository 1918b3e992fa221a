"""What each request did, for the access log and the metrics: one ASGI middleware, a record.

The record names the route by its template (`/accounts/password/authenticate`), never the
path a client sent or its query (an OAuth callback's `code` and `state` are in the query), and
carries the error's stable code and the user's id where the glue knew them, so no log line or
label can hold a secret.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ERROR_KEY",
    "ROUTE_KEY",
    "USER_KEY",
    "Observed",
    "Observer",
    "RequestRecord",
    "log_request",
]

#: Scope keys the routes and the error handler fill in (plain strings: no import cycle).
ROUTE_KEY = "accounts_server.route"
USER_KEY = "accounts_server.user_id"
ERROR_KEY = "accounts_server.error_code"

access_logger = logging.getLogger("accounts_server.access")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    #: The route's template, or "unmatched" (a 404) so labels stay few.
    route: str
    status: int
    seconds: float
    request_id: str
    error_code: str | None = None
    user_id: str | None = None


Observer = Callable[[RequestRecord], None]


class Observed:
    """ASGI middleware: gives every HTTP request an id (`X-Request-ID` in the answer) and
    hands each observer the request's record once it is answered."""

    def __init__(self, app: ASGIApp, observers: Sequence[Observer]) -> None:
        self.app = app
        self.observers = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = secrets.token_hex(8)
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            record = RequestRecord(
                method=scope["method"],
                route=scope.get(ROUTE_KEY, "unmatched"),
                status=status,
                seconds=time.perf_counter() - started,
                request_id=request_id,
                error_code=scope.get(ERROR_KEY),
                user_id=scope.get(USER_KEY),
            )
            for observer in self.observers:
                observer(record)


def log_request(record: RequestRecord) -> None:
    """One access-log line: INFO, or WARNING for a 5xx; the fields also as `extra`, for the
    JSON format."""
    level = logging.WARNING if record.status >= 500 else logging.INFO
    if not access_logger.isEnabledFor(level):
        return
    access_logger.log(
        level,
        "%s %s %s%s",
        record.method,
        record.route,
        record.status,
        f" {record.error_code}" if record.error_code else "",
        extra={
            "route": record.route,
            "method": record.method,
            "status": record.status,
            "request_id": record.request_id,
            "duration_ms": round(record.seconds * 1000, 3),
            **({"code": record.error_code} if record.error_code else {}),
            **({"user_id": record.user_id} if record.user_id else {}),
        },
    )
