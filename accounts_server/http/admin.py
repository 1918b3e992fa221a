"""The admin surface under `/admin`: list/search users with paging, get, update, deactivate,
activate, delete, and a user's sessions. Every call is authorized by the server's
`authorize_admin(user, action)` hook (default: nobody) before anything is read or changed,
and every completed action is emitted as `admin_action` for an audit trail. Glue only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import InvalidRequest, InvalidToken, UserNotFound
from ..server import AccountsServer
from ..types import User
from .request import access_token, read_json
from .wire import NO_STORE, json_response, to_wire

__all__ = ["admin_routes"]

Handler = Callable[[Request, User], Awaitable[object]]


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 6:
        raise InvalidRequest(f"{name} must be a non-negative integer")
    return int(raw)


def admin_routes(server: AccountsServer, max_body: int) -> list[BaseRoute]:
    def guarded(action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            token = access_token(request)
            if token is None:
                raise InvalidToken(reason="missing")
            actor = await server.authorize_admin(token, action)
            user_id = request.path_params.get("user_id")
            # Looked up first, so the audit event still names a user this call deletes.
            subject = await server.find_user_by_id(user_id) if user_id else None
            result = await handler(request, actor)
            await server.audit(actor, action, subject)
            return json_response(to_wire(result), headers=NO_STORE)

        return route

    async def target(request: Request) -> User:
        user = await server.find_user_by_id(request.path_params["user_id"])
        if user is None:
            raise UserNotFound()
        return user

    async def list_users(request: Request, actor: User) -> object:
        search = request.query_params.get("search") or None
        if search is not None and len(search) > 254:
            raise InvalidRequest("search too long")
        users = await server.list_users(
            search=search, offset=_int(request, "offset", 0), limit=_int(request, "limit", 50)
        )
        return {"users": to_wire(users)}

    async def get_user(request: Request, actor: User) -> object:
        return await target(request)

    async def update_user(request: Request, actor: User) -> object:
        body: Any = await read_json(request, max_bytes=max_body)
        unknown = set(body) - {"username", "extra"}
        if unknown:
            raise InvalidRequest(f"only username and extra can be changed here: {sorted(unknown)}")
        return await server.update_user(
            (await target(request)).id, username=body.get("username"), extra=body.get("extra")
        )

    async def deactivate(request: Request, actor: User) -> object:
        await server.deactivate_user((await target(request)).id)
        return None

    async def activate(request: Request, actor: User) -> object:
        await server.activate_user((await target(request)).id)
        return None

    async def delete(request: Request, actor: User) -> object:
        await server.delete_user((await target(request)).id)
        return None

    async def sessions(request: Request, actor: User) -> object:
        return await server.list_sessions((await target(request)).id)

    async def revoke(request: Request, actor: User) -> object:
        await server.revoke_session((await target(request)).id, request.path_params["sid"])
        return None

    user = "/admin/users/{user_id}"
    return [
        Route("/admin/users", guarded("users.list", list_users), methods=["GET"]),
        Route(user, guarded("users.get", get_user), methods=["GET"]),
        Route(user, guarded("users.update", update_user), methods=["PATCH"]),
        Route(user, guarded("users.delete", delete), methods=["DELETE"]),
        Route(f"{user}/deactivate", guarded("users.deactivate", deactivate), methods=["POST"]),
        Route(f"{user}/activate", guarded("users.activate", activate), methods=["POST"]),
        Route(f"{user}/sessions", guarded("sessions.list", sessions), methods=["GET"]),
        Route(f"{user}/sessions/{{sid}}", guarded("sessions.revoke", revoke), methods=["DELETE"]),
    ]
