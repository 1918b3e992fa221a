"""The admin surface under `/admin`: list/search users with paging, get, update, deactivate,
activate, delete, and a user's sessions. Glue only: authorization (`authorize_admin`, default
nobody) and the `admin_action` audit are the core's (`accounts_server.admin`), shared with the
management CLI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from ..admin import Admin
from ..audit import audit_query
from ..errors import InvalidToken
from ..server import AccountsServer
from .operations import Operation
from .request import access_token, query_int, query_time
from .wire import AUDIT_PAGE, audit_page, ref

__all__ = ["admin_operations"]

_NULL = {"type": "null"}
_USER = "/admin/users/{user_id}"


def admin_operations(
    server: AccountsServer, read_body: Callable[[Request], Awaitable[Any]]
) -> list[Operation]:
    async def admin(request: Request) -> Admin:
        token = access_token(request)
        if token is None:
            raise InvalidToken(reason="missing")
        return await server.admin(token)

    async def list_users(request: Request) -> object:
        found = await (await admin(request)).list_users(
            search=request.query_params.get("search") or None,
            offset=query_int(request, "offset", 0),
            limit=query_int(request, "limit", 50),
        )
        return {"users": found}

    async def get_user(request: Request) -> object:
        return await (await admin(request)).get_user(request.path_params["user_id"])

    async def update_user(request: Request) -> object:
        acting = await admin(request)
        body: Any = await read_body(request)
        return await acting.update_user(request.path_params["user_id"], body)

    async def deactivate(request: Request) -> object:
        await (await admin(request)).deactivate_user(request.path_params["user_id"])
        return None

    async def activate(request: Request) -> object:
        await (await admin(request)).activate_user(request.path_params["user_id"])
        return None

    async def delete(request: Request) -> object:
        await (await admin(request)).delete_user(request.path_params["user_id"])
        return None

    async def reset_two_factor(request: Request) -> object:
        removed = await (await admin(request)).reset_two_factor(request.path_params["user_id"])
        return {"removed": removed}

    async def sessions(request: Request) -> object:
        return await (await admin(request)).list_sessions(request.path_params["user_id"])

    async def audit(request: Request) -> object:
        acting = await admin(request)
        found = request.query_params
        events = tuple(e for value in found.getlist("event") for e in value.split(",") if e)
        query = audit_query(
            user_id=found.get("user") or None,
            events=events,
            since=query_time(request, "since"),
            until=query_time(request, "until"),
            before=found.get("before") or None,
            limit=query_int(request, "limit", 50),
        )
        return audit_page(await acting.list_audit(query), query.limit)

    async def revoke(request: Request) -> object:
        user_id, sid = request.path_params["user_id"], request.path_params["sid"]
        await (await admin(request)).revoke_session(user_id, sid)
        return None

    users = {"type": "object", "properties": {"users": {"type": "array", "items": ref("User")}}}
    sessions_list = {"type": "array", "items": ref("Session")}
    update = {
        "type": "object",
        "properties": {"username": {"type": "string"}, "extra": {"type": "object"}},
        "additionalProperties": False,
    }
    # A table: one operation per entry (fmt: off keeps its columns).
    # fmt: off
    return [
        Operation("GET", "/admin/users", list_users,
                  "Admin: list users (search: username or email prefix; offset, limit)", users,
                  admin=True),
        Operation("GET", _USER, get_user, "Admin: a user", ref("User"), admin=True),
        Operation("PATCH", _USER, update_user, "Admin: change username/extra", ref("User"),
                  admin=True, body=update),
        Operation("DELETE", _USER, delete, "Admin: delete a user", _NULL, admin=True),
        Operation("POST", f"{_USER}/deactivate", deactivate, "Admin: deactivate a user", _NULL,
                  admin=True),
        Operation("POST", f"{_USER}/activate", activate, "Admin: activate a user", _NULL,
                  admin=True),
        Operation("POST", f"{_USER}/resetTwoFactor", reset_two_factor,
                  "Admin: remove a user's second factor (TOTP and recovery codes)",
                  {"type": "object", "properties": {"removed": {"type": "boolean"}}},
                  admin=True),
        Operation("GET", f"{_USER}/sessions", sessions, "Admin: a user's sessions",
                  sessions_list, admin=True),
        Operation("DELETE", f"{_USER}/sessions/{{sid}}", revoke, "Admin: end a user's session",
                  _NULL, admin=True),
        Operation("GET", "/admin/audit", audit,
                  "Admin: the audit log, newest first (user, event (repeatable), since, until, "
                  "before: the previous page's next, limit)", AUDIT_PAGE, admin=True),
    ]
    # fmt: on
