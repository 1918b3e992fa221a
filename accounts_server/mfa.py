"""The second step of a login, for users who have a second factor.

When a service's first step asks for one (`Authenticated(..., second_factor=True)`, as the
password service does) and the user has a factor (TOTP, or one a `SecondFactor` service
offers, such as passkeys), no session opens: the server answers `TwoFactorCodeRequired` with
an `mfaToken` (256 bits, stored as SHA-256, single use, `TwoFactorConfig.mfa_lifetime`), the
factors the user has and what each needs answered. `POST mfa/authenticate {mfaToken, code}`
(TOTP or a recovery code) or `{mfaToken, <service>: proof}` (`webauthn`: an assertion)
finishes the login with the first step's `amr`, service and "remember me" choice.

A refused proof puts the token back, so a typo does not cost the password step; the TOTP
attempt limits still count, and the token still expires. Must not import a web framework or
a database driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .context import ServiceContext
from .errors import AccountsError, InvalidRequest, InvalidToken, TwoFactorCodeRequired
from .services import SecondFactor
from .twofactor import TOTP_KIND, TwoFactor
from .types import User

__all__ = ["MFA_KIND", "MfaStep", "MultiFactor"]

MFA_KIND = "mfa"
#: The factor name TOTP goes by; its proof is accounts-js's `code`.
_TOTP_FIELD = "code"


@dataclass(frozen=True, slots=True)
class MfaStep:
    """A login's first step, redeemed with its second: the session opens with these."""

    user: User
    service: str
    amr: tuple[str, ...]
    lifetime: timedelta | None


class MultiFactor:
    def __init__(
        self,
        *,
        context: ServiceContext,
        two_factor: TwoFactor,
        factors: Sequence[SecondFactor],
        lifetime: timedelta,
    ) -> None:
        self._ctx = context
        self._two_factor = two_factor
        self._factors = {factor.name: factor for factor in factors}
        self._lifetime = lifetime

    async def factors(self, user: User) -> tuple[list[str], dict[str, Mapping[str, Any]]]:
        """The factors the user has (`totp` first) and each one's challenge."""
        names: list[str] = []
        challenges: dict[str, Mapping[str, Any]] = {}
        if await self._two_factor.enabled(user.id):
            names.append(TOTP_KIND)
        for name, factor in self._factors.items():
            challenge = await factor.second_factor_challenge(user, self._ctx)
            if challenge is not None:
                names.append(name)
                challenges[name] = challenge
        return names, challenges

    async def required(
        self, user: User, *, service: str, amr: Sequence[str], lifetime: timedelta | None
    ) -> TwoFactorCodeRequired | None:
        """The refusal to raise instead of opening a session, with a new `mfaToken`; None
        when the user has no second factor."""
        names, challenges = await self.factors(user)
        if not names:
            return None
        token = await self._ctx.one_time.issue(
            kind=MFA_KIND,
            user_id=user.id,
            lifetime=self._lifetime,
            data={
                "service": service,
                "amr": list(amr),
                "lifetime": None if lifetime is None else lifetime.total_seconds(),
            },
        )
        return TwoFactorCodeRequired(mfa_token=token, factors=tuple(names), challenges=challenges)

    async def complete(self, params: Mapping[str, Any]) -> MfaStep:
        """Redeem an `mfaToken` with one proof; returns what the session opens with.

        Raises:
            InvalidToken: unknown, used or expired token; InvalidRequest: not exactly one
                proof, or one for a factor the user does not have; whatever the factor
                raises for a refused proof (TwoFactorCodeMismatch, RateLimited, ...).
        """
        if not isinstance(params, Mapping):
            raise InvalidRequest("params must be an object")
        proofs = [name for name in (_TOTP_FIELD, *self._factors) if params.get(name) is not None]
        if len(proofs) != 1:
            fields = ", ".join((_TOTP_FIELD, *self._factors))
            raise InvalidRequest(f"give the mfaToken and exactly one of: {fields}")
        user_id, token = await self._ctx.one_time.redeem_for_user(
            params.get("mfaToken"), [MFA_KIND]
        )
        try:
            user = await self._ctx.store.find_user_by_id(user_id)
            if user is None:
                raise InvalidToken(reason="user")
            second = await self._verify(user, proofs[0], params[proofs[0]])
        except AccountsError as exc:
            if not isinstance(exc, InvalidToken):
                await self._ctx.store.create_token(token)  # a typo keeps the first step
            raise
        lifetime = token.data.get("lifetime")
        return MfaStep(
            user=user,
            service=str(token.data["service"]),
            amr=(*token.data["amr"], *second),
            lifetime=None if lifetime is None else timedelta(seconds=lifetime),
        )

    async def _verify(self, user: User, name: str, proof: object) -> tuple[str, ...]:
        if name == _TOTP_FIELD:
            second = await self._two_factor.verify(user, proof)
            if not second:
                raise InvalidRequest("this account has no authenticator app; use another factor")
            return second
        return await self._factors[name].verify_second_factor(user, proof, self._ctx)
