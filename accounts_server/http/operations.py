"""The one table of HTTP operations, and what is derived from it: the Starlette routes and the
OpenAPI 3.1 document (served at `{prefix}/openapi.json`). A route exists only as an
`Operation`, so the document cannot miss one (tests/http/test_openapi.py compares the two).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .. import __version__
from ..deadline import store_deadline
from ..services import Redirect
from ..types import LoginResult, User
from .observe import ROUTE_KEY, USER_KEY
from .wire import NO_STORE, SCHEMAS, json_response, ref, to_wire

__all__ = ["Operation", "openapi_document", "route"]

#: Returns a Response, a `Redirect`, or a value put in wire form (JSON).
Handler = Callable[[Request], Awaitable[object]]
Schema = Mapping[str, Any]
_ERROR_STATUSES = (400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503)


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: what serves it and how it is documented. `path` is under the prefix;
    `response` is the 200 answer's JSON Schema."""

    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str
    handler: Handler = field(repr=False)
    summary: str
    response: Schema
    _: KW_ONLY
    #: The JSON body's schema; None for routes that read no body.
    body: Schema | None = None
    body_required: bool = True
    #: Whether an access token is wanted: `optional` routes answer anonymous callers too.
    auth: Literal["none", "optional", "required"] = "none"
    #: Authorized by `authorize_admin` and audited.
    admin: bool = False
    #: May answer with a 302 (browser flows).
    redirects: bool = False
    #: Browsers may cache the answer this long (public keys); otherwise never cached.
    max_age: int | None = None


def route(operation: Operation, prefix: str, *, cookie_path: str, deadline: float) -> Route:
    """The Starlette route serving `operation` at `prefix + path`, its store calls sharing
    one `store_deadline` of `deadline` seconds. Flat routes instead of a `Mount`: one router
    level less on every request (measured in benchmarks/run.py)."""
    handler = operation.handler
    headers = (
        NO_STORE
        if operation.max_age is None
        else {"Cache-Control": f"public, max-age={operation.max_age}"}
    )

    template = prefix + operation.path

    async def endpoint(request: Request) -> Response:
        request.scope[ROUTE_KEY] = template
        with store_deadline(deadline):
            result = await handler(request)
        if isinstance(result, LoginResult):
            request.scope[USER_KEY] = result.user.id
        elif isinstance(result, User):
            request.scope[USER_KEY] = result.id
        if isinstance(result, Redirect):
            return _redirect(result, secure=request.url.scheme == "https", path=cookie_path)
        return json_response(to_wire(result), headers=headers)

    return Route(prefix + operation.path, endpoint, methods=[operation.method])


def _redirect(redirect: Redirect, *, secure: bool, path: str) -> Response:
    response = RedirectResponse(redirect.location, status_code=302, headers=NO_STORE)
    for name, value in redirect.cookies.items():
        if value is None:
            response.delete_cookie(name, path=path, secure=secure, httponly=True, samesite="lax")
        else:
            response.set_cookie(
                name,
                value,
                max_age=redirect.cookie_max_age,
                path=path,
                secure=secure,
                httponly=True,
                samesite="lax",
            )
    return response


def _content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _document(operation: Operation) -> dict[str, Any]:
    error = {"description": "An error with a stable code", "content": _content(ref("Error"))}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": _content(operation.response)}
    }
    if operation.redirects:
        responses["302"] = {"description": "Redirect"}
    responses.update({str(status): error for status in _ERROR_STATUSES})
    document: dict[str, Any] = {"summary": operation.summary, "responses": responses}
    parameters = [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in operation.path.split("/")
        if part.startswith("{")
    ]
    if parameters:
        document["parameters"] = parameters
    if operation.body is not None:
        document["requestBody"] = {
            "required": operation.body_required,
            "content": _content(operation.body),
        }
    if operation.auth == "required" or operation.admin:
        document["security"] = [{"bearer": []}]
    elif operation.auth == "optional":
        document["security"] = [{"bearer": []}, {}]
    if operation.admin:
        document["x-admin"] = True
    return document


def openapi_document(operations: Sequence[Operation], prefix: str) -> dict[str, Any]:
    """The document for `operations` as mounted under `prefix`."""
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _document(operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": "accounts-server", "version": __version__},
        "servers": [{"url": prefix or "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
