"""The admin console: a dashboard of the last week, users (search, paging, detail with
sessions, deactivate/activate/delete, reset two-factor, impersonate) and the audit log.

Every view and action goes through `AccountsServer.admin`, so `authorize_admin` decides each
one (never from an impersonation session) and each is audited as `admin_action`, exactly as
over the API. Handlers read a form, call one `Admin` method, render.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...admin import CHARTED, Admin
from ...audit import AUDITED, audit_query
from ...errors import AccountsError, AdminNotAllowed, InvalidRequest
from .charts import hourly_chart
from .web import Page, Signed, quoted

__all__ = ["console_routes"]

_USER = "/admin/users/{user_id}"
_PAGE = 50
_TITLES = {
    "login_success": "Sign-ins",
    "login_error": "Failed sign-ins",
    "create_user_success": "Registrations",
    "refresh_token_reused": "Refresh-token reuse detected",
}


def console_routes(page: Page) -> list[Route]:
    console = _Console(page)
    return [
        Route("/admin", console.dashboard, methods=["GET"]),
        Route("/admin/users", console.users, methods=["GET"]),
        Route(_USER, console.user, methods=["GET"]),
        Route(f"{_USER}/impersonate", console.impersonate, methods=["POST"]),
        Route(f"{_USER}/{{action}}", console.act, methods=["POST"]),
        Route(f"{_USER}/sessions/{{sid}}/revoke", console.revoke, methods=["POST"]),
        Route("/admin/audit", console.audit, methods=["GET"]),
    ]


class _Console:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.server = page.server

    async def _admin(self, request: Request) -> tuple[Signed, Admin] | Response:
        signed = await self.page.signed_in(request)
        if signed is None:
            return self.page.redirect(
                request, f"{self.page.root}/signin?return_to=" + _here(request)
            )
        return signed, await self.server.admin(signed.access_token)

    async def dashboard(self, request: Request) -> Response:
        found = await self._admin(request)
        if isinstance(found, Response):
            return found
        signed, admin = found
        board = await admin.dashboard()
        charts = [
            hourly_chart(
                event, _TITLES[event], board.counts[event], since=board.since, step=board.step
            )
            for event in CHARTED
        ]
        return self.page.render(
            request, "admin_dashboard.html", signed=signed, board=board, charts=charts
        )

    async def users(self, request: Request) -> Response:
        found = await self._admin(request)
        if isinstance(found, Response):
            return found
        signed, admin = found
        search = request.query_params.get("q", "").strip() or None
        number = _page_number(request.query_params.get("page"))
        users = await admin.list_users(search=search, offset=(number - 1) * _PAGE, limit=_PAGE + 1)
        return self.page.render(
            request,
            "admin_users.html",
            signed=signed,
            users=users[:_PAGE],
            search=search or "",
            number=number,
            more=len(users) > _PAGE,
            done=request.query_params.get("done"),
        )

    async def user(self, request: Request, **notice: Any) -> Response:
        found = await self._admin(request)
        if isinstance(found, Response):
            return found
        signed, admin = found
        detail = await admin.user_detail(request.path_params["user_id"])
        return self.page.render(
            request,
            "admin_user.html",
            status=notice.pop("status", 200),
            signed=signed,
            detail=detail,
            done=request.query_params.get("done"),
            **notice,
        )

    async def _do(
        self, request: Request, work: Callable[[Signed, Admin, dict[str, str]], Awaitable[str]]
    ) -> Response:
        """A form of a user's page: done, then that page again with what happened (or back
        to the list when the user is gone)."""
        user_id = request.path_params["user_id"]
        try:
            found = await self._admin(request)
            if isinstance(found, Response):
                return found
            signed, admin = found
            form = await self.page.form(request)
            done = await work(signed, admin, form)
        except AccountsError as error:
            if request.method == "POST" and isinstance(error, InvalidRequest):
                return await self.user(request, error=error.message, status=400)
            raise
        if done.startswith("/"):
            return self.page.redirect(request, done, signed)
        return self.page.redirect(
            request, f"{self.page.root}/admin/users/{user_id}?done={done}", signed
        )

    async def act(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        action = str(request.path_params["action"])

        async def work(signed: Signed, admin: Admin, form: dict[str, str]) -> str:
            if action == "deactivate":
                await admin.deactivate_user(user_id)
            elif action == "activate":
                await admin.activate_user(user_id)
            elif action == "reset-two-factor":
                await admin.reset_two_factor(user_id)
            elif action == "revoke-sessions":
                await admin.revoke_all_sessions(user_id)
            elif action == "delete":
                if form.get("confirm") != "yes":
                    raise InvalidRequest("tick the box to confirm the deletion")
                await admin.delete_user(user_id)
                return f"{self.page.root}/admin/users?done=deleted"
            else:
                raise InvalidRequest(f"no such action: {action}")
            return action

        return await self._do(request, work)

    async def impersonate(self, request: Request) -> Response:
        """Sign this browser in as the user (if `impersonation_authorize` allows), keeping
        the admin's own tokens in cookies beside it: signing out of the impersonation
        session brings the admin back."""
        found = await self._admin(request)
        if isinstance(found, Response):
            return found
        signed, admin = found
        await self.page.form(request)
        if not await admin.allowed("users.get"):  # the console's door, as for every view
            raise AdminNotAllowed()
        user_id = request.path_params["user_id"]
        result = await self.server.impersonate(
            signed.access_token, {"userId": user_id}, self.page.info(request)
        )
        if not result.authorized or result.tokens is None:
            return await self.user(request, error="You may not act as this user.", status=403)
        response = self.page.redirect(request, f"{self.page.root}/account")
        self.page.stash(request, response, signed)
        self.page.sign_in(request, response, result.tokens)
        return response

    async def revoke(self, request: Request) -> Response:
        user_id, sid = request.path_params["user_id"], request.path_params["sid"]

        async def work(signed: Signed, admin: Admin, form: dict[str, str]) -> str:
            await admin.revoke_session(user_id, sid)
            return "revoked"

        return await self._do(request, work)

    async def audit(self, request: Request) -> Response:
        found = await self._admin(request)
        if isinstance(found, Response):
            return found
        signed, admin = found
        params = request.query_params
        event = params.get("event") or ""
        query = audit_query(
            user_id=params.get("user", "").strip() or None,
            events=(event,) if event else (),
            before=params.get("before") or None,
            limit=_PAGE,
        )
        records = await admin.list_audit(query)
        return self.page.render(
            request,
            "admin_audit.html",
            signed=signed,
            records=records,
            events=AUDITED,
            chosen={"user": query.user_id or "", "event": event},
            more=len(records) == _PAGE,
        )


def _page_number(value: str | None) -> int:
    if value is None:
        return 1
    if not re.fullmatch(r"[0-9]{1,5}", value) or not 1 <= int(value) <= 10_000:
        raise InvalidRequest("page must be a number from 1")
    return int(value)


def _here(request: Request) -> str:
    return quoted(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
