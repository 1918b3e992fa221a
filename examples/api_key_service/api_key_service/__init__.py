"""A complete custom login service: log in with an API key.

It needs only `name` and `authenticate`, plus (optionally) routes; everything it uses of the
server comes through the `ServiceContext` it is handed. Keys are stored as SHA-256 (a 256-bit
random key needs no slow hash), found by the user id they carry and compared in constant time.

    pip install -e examples/api_key_service
    accounts-server serve --service password --service apikey
    POST /accounts/apikey/createKey   (with an access token)  -> {"apiKey": "ak_..."}
    POST /accounts/apikey/authenticate {"apiKey": "ak_..."}    -> LoginResult
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from accounts_server import EndpointRequest, InvalidRequest, ServiceContext, ServiceEndpoint, User

__all__ = ["ApiKeyService"]


class ApiKeyService:
    name = "apikey"

    def endpoints(self) -> Sequence[ServiceEndpoint]:
        return (
            ServiceEndpoint(
                "createKey",
                self._create_key,
                summary="A new API key for the logged-in user, shown once",
                response={"type": "object", "properties": {"apiKey": {"type": "string"}}},
                auth="required",
            ),
        )

    async def authenticate(self, params: Mapping[str, Any], ctx: ServiceContext) -> User | None:
        key = params.get("apiKey")
        if not isinstance(key, str) or not key.startswith("ak_") or len(key) > 100:
            raise InvalidRequest("apiKey must be a key made by createKey")
        user_id, _, secret = key[3:].partition(".")
        user = await ctx.store.find_user_by_id(user_id)
        data = await ctx.store.get_service_data(user_id, self.name) if user else None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        stored = str((data or {}).get("sha256", ""))
        if user is None or not hmac.compare_digest(digest, stored):
            return None  # the server answers InvalidCredentials
        return user

    async def _create_key(self, request: EndpointRequest, ctx: ServiceContext) -> dict[str, str]:
        """A new key for the logged-in user (replacing any previous one); shown once."""
        user, _ = await ctx.authenticated(request.access_token)
        secret = secrets.token_urlsafe(32)
        data = {"sha256": hashlib.sha256(secret.encode()).hexdigest()}
        await ctx.store.set_service_data(user.id, self.name, data, now=ctx.clock())
        return {"apiKey": f"ak_{user.id}.{secret}"}
