"""The accounts-js wire shapes (camelCase) of the server's results, their JSON Schemas (for the
OpenAPI document) and their JSON encoding. Each shape's converter and schema sit together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from ..stores.base import AuditRecord
from ..types import ImpersonationResult, LoginResult, Session, Tokens, User

__all__ = ["AUDIT_PAGE", "NO_STORE", "SCHEMAS", "audit_page", "json_response", "ref", "to_wire"]

#: Headers of every answer that carries account data or an error: never cached, never sniffed.
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def json_response(
    content: object, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Every JSON body we send. orjson encodes a user in a tenth of the stdlib's time, which
    is a measurable share of `GET /user` (benchmarks/run.py)."""
    return Response(
        orjson.dumps(content), status_code, headers=headers, media_type="application/json"
    )


def _ms(value: Any) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def ref(name: str) -> dict[str, Any]:
    """A reference to one of `SCHEMAS`.

    Raises:
        KeyError: no such schema (a typo in a route table fails at import).
    """
    SCHEMAS[name]
    return {"$ref": f"#/components/schemas/{name}"}


_STRING = {"type": "string"}
_TIME = {"type": ["integer", "null"]}
SCHEMAS: dict[str, Any] = {
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
}
SCHEMAS["User"] = {
    "type": "object",
    "required": ["id", "emails", "deactivated"],
    "properties": {
        "id": _STRING,
        "username": {"type": ["string", "null"]},
        "emails": {"type": "array", "items": ref("Email")},
        "deactivated": {"type": "boolean"},
        "createdAt": _TIME,
        "updatedAt": _TIME,
    },
}


def _user(user: User) -> dict[str, Any]:
    return {
        **user.extra,
        "id": user.id,
        "username": user.username,
        "emails": [{"address": e.address, "verified": e.verified} for e in user.emails],
        "deactivated": user.deactivated,
        "createdAt": _ms(user.created_at),
        "updatedAt": _ms(user.updated_at),
    }


def _tokens(tokens: Tokens) -> dict[str, str]:
    return {"accessToken": tokens.access_token, "refreshToken": tokens.refresh_token}


SCHEMAS["Tokens"] = {
    "type": "object",
    "required": ["accessToken", "refreshToken"],
    "properties": {"accessToken": _STRING, "refreshToken": _STRING},
}
SCHEMAS["LoginResult"] = {
    "type": "object",
    "required": ["sessionId", "tokens", "user"],
    "properties": {"sessionId": _STRING, "tokens": ref("Tokens"), "user": ref("User")},
}
SCHEMAS["ImpersonationResult"] = {
    "type": "object",
    "required": ["authorized"],
    "properties": {"authorized": {"type": "boolean"}, "tokens": ref("Tokens"), "user": ref("User")},
}


def _session(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "userId": session.user_id,
        "valid": session.valid,
        "createdAt": _ms(session.created_at),
        "updatedAt": _ms(session.updated_at),
        "lastUsedAt": _ms(session.last_used_at),
        "expiresAt": _ms(session.expires_at),
        "ip": session.ip,
        "userAgent": session.user_agent,
        "impersonatorId": session.impersonator_id,
        "amr": list(session.amr),
        "current": session.current,
    }


SCHEMAS["Session"] = {
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
        "amr": {"type": "array", "items": _STRING},
        "current": {"type": "boolean"},
    },
}
_AUDIT_FIELDS = {
    "userId": "user_id",
    "actorId": "actor_id",
    "sessionId": "session_id",
    "service": "service",
    "code": "code",
    "ip": "ip",
    "userAgent": "user_agent",
    "detail": "detail",
}


def _audit(record: AuditRecord) -> dict[str, Any]:
    body: dict[str, Any] = {"id": record.id, "at": _ms(record.at), "event": record.event}
    body.update({wire: getattr(record, name) for wire, name in _AUDIT_FIELDS.items()})
    return body


def audit_page(records: list[AuditRecord], limit: int) -> dict[str, Any]:
    """One page of audit records and the cursor of the next (`before=`), None when this one
    was the last."""
    more = len(records) == limit and records
    return {"records": to_wire(records), "next": records[-1].id if more else None}


_NULLABLE = {"type": ["string", "null"]}
SCHEMAS["AuditRecord"] = {
    "type": "object",
    "required": ["id", "at", "event"],
    "properties": {
        "id": _STRING,
        "at": {"type": "integer"},
        "event": _STRING,
        **dict.fromkeys(_AUDIT_FIELDS, _NULLABLE),
    },
}
AUDIT_PAGE = {
    "type": "object",
    "required": ["records", "next"],
    "properties": {
        "records": {"type": "array", "items": ref("AuditRecord")},
        "next": _NULLABLE,
    },
}
SCHEMAS["JWKS"] = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
}


def to_wire(value: object) -> Any:
    """Our result types in wire form; JSON values pass through."""
    if isinstance(value, User):
        return _user(value)
    if isinstance(value, LoginResult):
        return {
            "sessionId": value.session_id,
            "tokens": _tokens(value.tokens),
            "user": _user(value.user),
        }
    if isinstance(value, ImpersonationResult):
        body: dict[str, Any] = {"authorized": value.authorized}
        if value.tokens is not None:
            body["tokens"] = _tokens(value.tokens)
        if value.user is not None:
            body["user"] = _user(value.user)
        return body
    if isinstance(value, Session):
        return _session(value)
    if isinstance(value, AuditRecord):
        return _audit(value)
    if isinstance(value, list | tuple):
        return [to_wire(item) for item in value]
    return value
