"""The OpenAPI 3.1 document of the accounts routes, served at `{prefix}/openapi.json`.

The protocol routes are described precisely; a login service's own endpoints are listed from
the running server (so a custom service appears by itself) with a JSON-object body. Every error
has the one shape `{message, code}`.
"""

from __future__ import annotations

from typing import Any

from ..server import AccountsServer
from ..services import ProvidesEndpoints

__all__ = ["openapi_document"]

_ref = {
    name: {"$ref": f"#/components/schemas/{name}"}
    for name in ("LoginResult", "User", "Error", "ImpersonationResult", "Tokens", "JWKS", "Session")
}
_STRING = {"type": "string"}
_NULLABLE_USER = {"oneOf": [_ref["User"], {"type": "null"}]}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _errors() -> dict[str, Any]:
    error = _json(_ref["Error"], "An error with a stable code")
    return {str(status): error for status in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)}


def _operation(
    summary: str, ok: dict[str, Any], body: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **_errors()}}
    if body is not None:
        operation["requestBody"] = body
    operation.update(extra)
    return operation


_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {}]
_SERVICE = {"name": "service", "in": "path", "required": True, "schema": _STRING}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["message", "code"],
        "properties": {"message": _STRING, "code": _STRING},
    },
    "Email": {
        "type": "object",
        "required": ["address", "verified"],
        "properties": {"address": _STRING, "verified": {"type": "boolean"}},
    },
    "User": {
        "type": "object",
        "required": ["id", "emails", "deactivated"],
        "properties": {
            "id": _STRING,
            "username": {"type": ["string", "null"]},
            "emails": {"type": "array", "items": {"$ref": "#/components/schemas/Email"}},
            "deactivated": {"type": "boolean"},
            "createdAt": {"type": ["integer", "null"]},
            "updatedAt": {"type": ["integer", "null"]},
        },
    },
    "Tokens": {
        "type": "object",
        "required": ["accessToken", "refreshToken"],
        "properties": {"accessToken": _STRING, "refreshToken": _STRING},
    },
    "LoginResult": {
        "type": "object",
        "required": ["sessionId", "tokens", "user"],
        "properties": {"sessionId": _STRING, "tokens": _ref["Tokens"], "user": _ref["User"]},
    },
    "ImpersonationResult": {
        "type": "object",
        "required": ["authorized"],
        "properties": {
            "authorized": {"type": "boolean"},
            "tokens": _ref["Tokens"],
            "user": _ref["User"],
        },
    },
    "Session": {
        "type": "object",
        "required": ["id", "userId", "valid", "createdAt", "expiresAt", "current"],
        "properties": {
            "id": _STRING,
            "userId": _STRING,
            "valid": {"type": "boolean"},
            "createdAt": {"type": "integer"},
            "updatedAt": {"type": "integer"},
            "lastUsedAt": {"type": "integer"},
            "expiresAt": {"type": "integer"},
            "ip": {"type": ["string", "null"]},
            "userAgent": {"type": ["string", "null"]},
            "impersonatorId": {"type": ["string", "null"]},
            "current": {"type": "boolean"},
        },
    },
    "JWKS": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
    },
}


def _admin_paths() -> dict[str, Any]:
    admin: list[dict[str, list[str]]] = [{"bearer": []}]
    user_id = {"name": "user_id", "in": "path", "required": True, "schema": _STRING}
    null = _json({"type": "null"})
    users = {"type": "object", "properties": {"users": {"type": "array", "items": _ref["User"]}}}
    paging = [
        {"name": "search", "in": "query", "schema": _STRING},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    ]
    update = {
        "type": "object",
        "properties": {"username": _STRING, "extra": {"type": "object"}},
        "additionalProperties": False,
    }
    one = "/admin/users/{user_id}"
    return {
        "/admin/users": {
            "get": _operation("Admin: list users", _json(users), parameters=paging, security=admin)
        },
        one: {
            "get": _operation(
                "Admin: a user", _json(_ref["User"]), parameters=[user_id], security=admin
            ),
            "patch": _operation(
                "Admin: change username/extra",
                _json(_ref["User"]),
                _body(update),
                parameters=[user_id],
                security=admin,
            ),
            "delete": _operation("Admin: delete", null, parameters=[user_id], security=admin),
        },
        f"{one}/deactivate": {
            "post": _operation("Admin: deactivate", null, parameters=[user_id], security=admin)
        },
        f"{one}/activate": {
            "post": _operation("Admin: activate", null, parameters=[user_id], security=admin)
        },
        f"{one}/sessions": {
            "get": _operation(
                "Admin: a user's sessions",
                _json({"type": "array", "items": _ref["Session"]}),
                parameters=[user_id],
                security=admin,
            )
        },
        f"{one}/sessions/{{sid}}": {
            "delete": _operation(
                "Admin: end a user's session",
                null,
                parameters=[
                    user_id,
                    {"name": "sid", "in": "path", "required": True, "schema": _STRING},
                ],
                security=admin,
            )
        },
    }


def openapi_document(server: AccountsServer, prefix: str) -> dict[str, Any]:
    """The document for `server`'s routes as mounted under `prefix`."""
    paths: dict[str, Any] = {
        "/{service}/authenticate": {
            "post": _operation(
                "Log in with a login service",
                _json(_ref["LoginResult"]),
                _body({"type": "object"}),
                parameters=[_SERVICE],
            )
        },
        "/{service}/verifyAuthentication": {
            "post": _operation(
                "Check credentials without opening a session",
                _json({"type": "boolean"}),
                _body({"type": "object"}),
                parameters=[_SERVICE],
            )
        },
        "/refreshTokens": {
            "post": _operation(
                "Rotate the refresh token and issue a new pair",
                _json(_ref["LoginResult"]),
                _body(
                    {
                        "type": "object",
                        "required": ["refreshToken"],
                        "properties": {"accessToken": _STRING, "refreshToken": _STRING},
                    }
                ),
            )
        },
        "/logout": {
            "post": _operation(
                "End this session", _json({"type": "null"}), security=[{"bearer": []}]
            )
        },
        "/user": {
            **{
                method: _operation(
                    "The logged-in user, or null", _json(_NULLABLE_USER), security=_BEARER
                )
                for method in ("get", "post")
            },
            "delete": _operation(
                "Delete one's own account (password users give their password)",
                _json({"type": "null"}),
                _body({"type": "object", "properties": {"password": _STRING}}, required=False),
                security=[{"bearer": []}],
            ),
        },
        "/sessions": {
            "get": _operation(
                "One's own live sessions",
                _json({"type": "array", "items": _ref["Session"]}),
                security=[{"bearer": []}],
            ),
            "delete": _operation(
                "End all one's other sessions",
                _json({"type": "object", "properties": {"revoked": {"type": "integer"}}}),
                security=[{"bearer": []}],
            ),
        },
        "/sessions/freshen": {
            "post": _operation(
                "Mark this session used now",
                _json(_ref["Session"]),
                security=[{"bearer": []}],
            )
        },
        "/sessions/{sid}": {
            "delete": _operation(
                "End one of one's sessions",
                _json({"type": "null"}),
                parameters=[{"name": "sid", "in": "path", "required": True, "schema": _STRING}],
                security=[{"bearer": []}],
            )
        },
        "/impersonate": {
            "post": _operation(
                "Open a session as another user, if allowed",
                _json(_ref["ImpersonationResult"]),
                _body(
                    {
                        "type": "object",
                        "required": ["accessToken", "impersonated"],
                        "properties": {
                            "accessToken": _STRING,
                            "impersonated": {
                                "type": "object",
                                "properties": {
                                    "userId": _STRING,
                                    "username": _STRING,
                                    "email": _STRING,
                                },
                            },
                        },
                    }
                ),
            )
        },
        "/.well-known/jwks.json": {
            "get": {"summary": "Public keys", "responses": {"200": _json(_ref["JWKS"])}}
        },
        "/health": {
            "get": _operation(
                "Liveness, including the store",
                _json({"type": "object", "properties": {"status": _STRING}}),
            )
        },
    }
    paths.update(_admin_paths())
    for name, service in server.services.items():
        if not isinstance(service, ProvidesEndpoints):
            continue
        for endpoint in service.endpoints():
            path = endpoint.path if endpoint.path.startswith("/") else f"/{name}/{endpoint.path}"
            parameters = [
                {"name": part[1:-1], "in": "path", "required": True, "schema": _STRING}
                for part in path.split("/")
                if part.startswith("{")
            ]
            summary = f"{name}: {endpoint.path}"
            if endpoint.method == "GET":
                operation = {
                    "summary": summary,
                    "parameters": parameters,
                    "responses": {
                        "200": _json({}),
                        "302": {"description": "Redirect"},
                        **_errors(),
                    },
                }
            else:
                operation = _operation(
                    summary, _json({}), _body({"type": "object"}, required=False)
                )
                if parameters:
                    operation["parameters"] = parameters
            paths.setdefault(path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "accounts-server", "version": "0.1.0"},
        "servers": [{"url": prefix or "/"}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
