"""`TokenVerifier`: for other services that hold only this server's JWKS URL.

The JWKS is fetched once and cached; a token naming an unknown `kid` (the server rotated its
keys) triggers one refetch, at most every `refetch_interval`, so forged `kid`s cannot make us
hammer the server. Verification itself is `TokenCodec`'s: the same pinned algorithms and
required claims as the server applies.
"""

from __future__ import annotations

import time
from datetime import timedelta

from ..errors import InvalidToken, TemporarilyUnavailable
from ..tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    AccessClaims,
    KeyRing,
    TokenCodec,
    TokenConfig,
)

__all__ = ["TokenVerifier"]


class TokenVerifier:
    """Raises (from `verify`):
    InvalidToken (TokenExpired); TemporarilyUnavailable when the JWKS cannot be fetched.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        refetch_interval: timedelta = timedelta(seconds=30),
        timeout: float = 5.0,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.refetch_interval = refetch_interval.total_seconds()
        self.timeout = timeout
        self._codec: TokenCodec | None = None
        self._fetched_at = float("-inf")

    async def _load(self) -> TokenCodec:
        # Imported here: httpx (which brings rich for its CLI) is ~15 MiB that a server which
        # never verifies against a remote JWKS should not carry.
        import httpx

        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.jwks_url)
                response.raise_for_status()
                jwks = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise TemporarilyUnavailable("the JWKS could not be fetched") from exc
        self._fetched_at = time.monotonic()
        ring = KeyRing.from_jwks(jwks)
        self._codec = TokenCodec(TokenConfig(keys=ring, issuer=self.issuer, audience=self.audience))
        return self._codec

    async def verify(self, token: str) -> AccessClaims:
        codec = self._codec or await self._load()
        try:
            return codec.verify_access(token)
        except InvalidToken as exc:
            stale = time.monotonic() - self._fetched_at >= self.refetch_interval
            if exc.reason != "kid" or not stale:
                raise
        return (await self._load()).verify_access(token)
