"""The one table from error class to HTTP status, and the JSON error body.

Resolved along the class's MRO, as Starlette finds exception handlers, so a new subclass gets
its parent's status without an edit here. Anything that is not an `AccountsError` is a bug:
it is logged with its trace and the client gets a 500 JSON body without one.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import errors as e
from .observe import ERROR_KEY
from .wire import NO_STORE, json_response

__all__ = [
    "STATUS",
    "error_response",
    "handle_accounts_error",
    "handle_client_disconnect",
    "handle_http_exception",
    "handle_unexpected",
    "status_for",
]

logger = logging.getLogger("accounts_server.http")

STATUS: dict[type[e.AccountsError], int] = {
    e.AccountsError: 500,
    e.InvalidRequest: 400,
    e.RequestTooLarge: 413,
    e.RequestTimeout: 408,
    e.UnsupportedMediaType: 415,
    e.ValidationFailed: 422,
    e.AuthenticationFailed: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.MethodNotAllowed: 405,
    e.Conflict: 409,
    e.RateLimited: 429,
    e.TemporarilyUnavailable: 503,
}


def status_for(error: e.AccountsError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(error: e.AccountsError) -> Response:
    status = status_for(error)
    body: dict[str, object]
    if status == 500:
        # A misconfiguration (e.g. a hook setting a reserved claim): the operator's problem,
        # logged in full; the client learns nothing about it.
        logger.error("request failed: %s: %s", type(error).__name__, error.message)
        body = {"message": "Internal server error", "code": "InternalError"}
    else:
        body = {"message": error.message, "code": error.code, **_details(error)}
    headers = dict(NO_STORE)
    if isinstance(error, e.RateLimited | e.TemporarilyUnavailable):
        headers["Retry-After"] = str(error.retry_after)
    return json_response(body, status_code=status, headers=headers)


def _details(error: e.AccountsError) -> dict[str, object]:
    """What a client needs beside the code: how to finish a login that wants a second factor."""
    if isinstance(error, e.TwoFactorCodeRequired) and error.mfa_token is not None:
        return {
            "mfaToken": error.mfa_token,
            "factors": list(error.factors),
            "challenges": dict(error.challenges),
        }
    return {}


async def handle_accounts_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.AccountsError)
    request.scope[ERROR_KEY] = exc.code
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 become our JSON errors: every response is JSON."""
    assert isinstance(exc, HTTPException)
    error: e.AccountsError
    if exc.status_code == 405:
        error = e.MethodNotAllowed()
    elif exc.status_code == 404:
        error = e.RouteNotFound()
    else:
        error = e.InvalidRequest()
    request.scope[ERROR_KEY] = error.code
    response = error_response(error)
    if exc.headers and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away mid-body: nobody can receive an answer, nothing was done, and it
    is no error of ours (one debug line, not a traceback)."""
    logger.debug("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response(
        {"message": "Internal server error", "code": "InternalError"},
        status_code=500,
        headers=NO_STORE,
    )
