"""The password login service: `register`, and `authenticate` by username, email or id.

Written only against `accounts_server`'s public API, as any third-party service would be.
Unknown users and wrong passwords cost the same one hash verification and give the same
`InvalidCredentials`, so neither timing nor answer tells whether an account exists
(ASVS 2.2.1 / OWASP authentication cheat sheet).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from accounts_server import (
    AccountsServer,
    ConfigurationError,
    EndpointRequest,
    InvalidPassword,
    InvalidRequest,
    ServiceContext,
    ServiceEndpoint,
    User,
    UsernameOrEmailRequired,
    validate_email,
    validate_username,
)

from .hashing import PasswordHasher

__all__ = ["PasswordService"]

_DATA_KEY = "argon2"


class PasswordService:
    """Raises:
    ConfigurationError: password length bounds out of 8..1024 or inverted.
    """

    name = "password"

    def __init__(
        self,
        *,
        hasher: PasswordHasher | None = None,
        min_length: int = 8,
        max_length: int = 1024,
    ) -> None:
        if not (8 <= min_length <= max_length <= 1024):
            raise ConfigurationError("password lengths must satisfy 8 <= min <= max <= 1024")
        self.hasher = hasher or PasswordHasher()
        self.min_length = min_length
        self.max_length = max_length

    def endpoints(self) -> Sequence[ServiceEndpoint]:
        return (ServiceEndpoint("register", self._register),)

    # -- login ------------------------------------------------------------------------------

    async def authenticate(self, params: Mapping[str, Any], ctx: ServiceContext) -> User | None:
        """Raises:
        InvalidRequest: `user` or `password` missing or of the wrong type.
        """
        password = self._password(params.get("password"))
        user = await self._find(params.get("user"), ctx)
        data = None if user is None else await ctx.store.get_service_data(user.id, self.name)
        encoded = data.get(_DATA_KEY) if data else None
        if user is None or not isinstance(encoded, str):
            await self.hasher.verify_dummy(password)
            return None
        if not await self.hasher.verify(encoded, password):
            return None
        if self.hasher.needs_rehash(encoded):
            new = await self.hasher.hash(password)
            await ctx.store.set_service_data(user.id, self.name, {_DATA_KEY: new}, now=ctx.clock())
        return user

    async def _find(self, identity: object, ctx: ServiceContext) -> User | None:
        """accounts-js sends `user` as a string (email if it has an `@`, else a username) or
        as exactly one of {id, username, email}."""
        if isinstance(identity, str):
            if "@" in identity:
                return await ctx.store.find_user_by_email(identity)
            return await ctx.store.find_user_by_username(identity)
        if not isinstance(identity, Mapping):
            raise InvalidRequest("user must be a string or an object")
        given = {k: v for k, v in identity.items() if v is not None}
        if len(given) != 1:
            raise InvalidRequest("user must have exactly one of id, username or email")
        ((key, value),) = given.items()
        if key not in ("id", "username", "email") or not isinstance(value, str):
            raise InvalidRequest("user must have exactly one of id, username or email")
        if len(value) > 256:
            return None
        if key == "id":
            return await ctx.store.find_user_by_id(value)
        if key == "username":
            return await ctx.store.find_user_by_username(value)
        return await ctx.store.find_user_by_email(value)

    def _password(self, value: object) -> str:
        if not isinstance(value, str):
            raise InvalidRequest("password must be a string")
        password = unicodedata.normalize("NFKC", value)
        if len(password) > self.max_length:
            raise InvalidPassword(f"password must be at most {self.max_length} characters")
        return password

    # -- routes -----------------------------------------------------------------------------

    async def create_user(
        self,
        server: AccountsServer,
        *,
        password: str,
        username: str | None = None,
        email: str | None = None,
    ) -> User:
        """Create a user who logs in with this password (accounts-js `createUser`).

        Raises:
            InvalidPassword, UsernameOrEmailRequired, InvalidUsername, InvalidEmail,
            UsernameAlreadyExists, EmailAlreadyExists.
        """
        password = self._password(password)
        if len(password) < self.min_length:
            raise InvalidPassword(f"password must be at least {self.min_length} characters")
        # Cheap checks before the expensive hash.
        username = None if username is None else validate_username(username)
        email = None if email is None else validate_email(email)
        if username is None and email is None:
            raise UsernameOrEmailRequired()
        return await server.create_user(
            username=username,
            emails=[email] if email is not None else [],
            services={self.name: {_DATA_KEY: await self.hasher.hash(password)}},
        )

    async def _register(self, request: EndpointRequest) -> dict[str, str]:
        """`POST /password/register {user: {username?, email?, password}}` → `{userId}`.

        Raises:
            InvalidRequest, and what `create_user` raises.
        """
        fields = request.body.get("user")
        if not isinstance(fields, Mapping):
            raise InvalidRequest("user must be an object")
        unknown = set(fields) - {"username", "email", "password"}
        if unknown:
            raise InvalidRequest(f"unknown user fields: {sorted(unknown)}")
        password = fields.get("password")
        if not isinstance(password, str):
            raise InvalidRequest("password must be a string")
        user = await self.create_user(
            request.server,
            password=password,
            username=fields.get("username"),
            email=fields.get("email"),
        )
        return {"userId": user.id}
