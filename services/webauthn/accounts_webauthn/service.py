"""Passkeys (WebAuthn Level 3) on py_webauthn: registration, passwordless login and a second
factor, written only against accounts-server's public service contract.

Routes (under `/accounts/webauthn/`): `register/options` and `register/verify` (logged in),
`credentials` (list), `credentials/{id}` (PATCH renames, DELETE removes), `login/options`, and
the protocol's `authenticate` with `{webauthn: <assertion>}`. As a second factor its challenge
comes with the password step's `mfaToken`, and `mfa/authenticate {mfaToken, webauthn}` ends it.

Security choices (W3C WebAuthn L3 §7; ASVS 6.3, 6.4):
- **Challenges** are one-time tokens (256 bits, stored as SHA-256, single use,
  `challenge_lifetime`) of one purpose each (register, login, second factor): registration's is
  bound to the user and the session that asked, a second factor's to the user. The challenge
  is read back from `clientDataJSON` and redeemed before anything else is checked, so a
  replayed ceremony, whatever else it gets right, finds nothing.
- **Origin and RP ID hash** are checked by py_webauthn against configured exact origins; an
  RP ID that is not a registrable suffix of every origin is refused at startup.
- **User verification** is required to register and for passwordless login (a passkey is
  then possession and a PIN or biometric: `amr` `hwk`, `user`, `mfa`); after a password it is
  preferred (`hwk`, `mfa` beside `pwd`).
- **Sign counts** are compared after the signature is verified, so only a genuine
  authenticator's counter (or its clone's) can trip it: a counter that did not go up refuses
  the assertion and emits `passkey_sign_count_regressed`. The new count is written by
  compare-and-set, so of two concurrent assertions with one count, one wins.
- **Attestation** `none` by default (privacy, and what passkey providers send); a policy can
  demand formats or authenticator models (AAGUIDs). Every public key is loaded before it is
  stored, so a junk key cannot be registered (py_webauthn does not load it for `none`).
- A recent sign-in is needed to add or remove a passkey, never an impersonation session, and
  the last way into an account cannot be removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_client_data_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialRequestOptions,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

import accounts_server
from accounts_server import (
    AccountsError,
    Authenticated,
    AuthenticationFailed,
    ConfigurationError,
    Credential,
    CredentialAlreadyExists,
    EndpointRequest,
    InvalidRequest,
    InvalidToken,
    LastLoginMethod,
    NotFound,
    ServiceContext,
    ServiceEndpoint,
    ServiceSettings,
    Session,
    StepUpRequired,
    User,
    UserNotFound,
    ValidationFailed,
)

__all__ = [
    "NotWhileImpersonating",
    "PasskeyNotFound",
    "PasskeyRefused",
    "PasskeyRegistrationRefused",
    "SignCountRegressed",
    "WebAuthnService",
    "from_settings",
]

KIND = "webauthn"
_REGISTER, _LOGIN, _SECOND = "webauthn-register", "webauthn-login", "webauthn-mfa"
#: What the proof earns (RFC 8176): a hardware-bound key; with user verification, also the
#: user's PIN or biometric, which makes it multi-factor on its own.
PASSWORDLESS_AMR = ("hwk", "mfa", "user")
SECOND_FACTOR_AMR = ("hwk", "mfa")
#: The default limit of passkeys per user.
MAX_PASSKEYS = 20
#: Ed25519 first (small, fast), then P-256 and RSA, which most authenticators have.
_ALGORITHMS = [
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
#: WebAuthn L3 §5.1: a credential id is at most 1023 bytes (1364 base64url characters).
_MAX_ID_LENGTH = 1364
_MAX_NAME_LENGTH = 64
_CAS_ATTEMPTS = 3
Attestation = Literal["none", "indirect", "direct", "enterprise"]


class PasskeyRefused(AuthenticationFailed):
    """An assertion that does not prove the user: unknown credential or challenge, wrong
    origin or RP, no user verification, bad signature. `reason` is for logs and tests."""

    code = "PasskeyRefused"
    default_message = "Passkey not accepted"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Passkey not accepted: {reason}")
        self.reason = reason


class SignCountRegressed(PasskeyRefused):
    """The authenticator's counter did not go up: two copies of one key are in use."""

    code = "PasskeySignCountRegressed"

    def __init__(self) -> None:
        super().__init__("its signature counter went backwards; it may have been cloned")


class PasskeyRegistrationRefused(ValidationFailed):
    """A registration response that does not verify, or that the attestation policy refuses."""

    code = "PasskeyRegistrationRefused"
    default_message = "Passkey not registered"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Passkey not registered: {reason}")
        self.reason = reason


class PasskeyNotFound(NotFound):
    code = "PasskeyNotFound"
    default_message = "No such passkey"


class NotWhileImpersonating(accounts_server.NotWhileImpersonating):
    """Credentials are the user's own: an impersonator may not add or remove them."""

    default_message = "Passkeys cannot be changed from an impersonation session"


class WebAuthnService:
    """Passkeys for the users of one relying party.

    `rp_id` is the domain passkeys are bound to (`example.com` serves `https://example.com` and
    `https://app.example.com`); `origins` are the exact origins pages run on (`https://host`,
    `http://localhost:PORT` for development). `attestation_formats` (e.g. `{"packed", "tpm"}`)
    and `aaguids` restrict which authenticators may register; None accepts any.

    Raises:
        ConfigurationError: an RP ID that is not a registrable suffix of every origin, an
            origin that is not `https://` (or `http://localhost`), a duration out of range.
    """

    name = "webauthn"

    def __init__(
        self,
        *,
        rp_id: str,
        rp_name: str,
        origins: Sequence[str],
        attestation: Attestation = "none",
        attestation_formats: frozenset[str] | None = None,
        aaguids: frozenset[str] | None = None,
        challenge_lifetime: timedelta = timedelta(minutes=5),
        recent_login: timedelta = timedelta(minutes=15),
        max_passkeys: int = MAX_PASSKEYS,
    ) -> None:
        self.rp_id = _check_rp_id(rp_id)
        if not rp_name or len(rp_name) > 128:
            raise ConfigurationError("rp_name must be 1 to 128 characters")
        self.rp_name = rp_name
        if isinstance(origins, str) or not origins:
            raise ConfigurationError("origins must be a non-empty list of origins")
        self.origins = [_check_origin(origin, self.rp_id) for origin in origins]
        if attestation not in ("none", "indirect", "direct", "enterprise"):
            raise ConfigurationError(f"unknown attestation conveyance {attestation!r}")
        self.attestation = AttestationConveyancePreference(attestation)
        self.attestation_formats = attestation_formats
        self.aaguids = None if aaguids is None else frozenset(a.lower() for a in aaguids)
        if not (timedelta(minutes=1) <= challenge_lifetime <= timedelta(minutes=10)):
            raise ConfigurationError("challenge_lifetime must be between 1 and 10 minutes")
        if not (timedelta(minutes=1) <= recent_login <= timedelta(days=1)):
            raise ConfigurationError("recent_login must be between 1 minute and 1 day")
        if not (1 <= max_passkeys <= 100):
            raise ConfigurationError("max_passkeys must be between 1 and 100")
        self.challenge_lifetime = challenge_lifetime
        self.recent_login = recent_login
        self.max_passkeys = max_passkeys

    def endpoints(self) -> Sequence[ServiceEndpoint]:
        options = {"type": "object", "description": "WebAuthn options, in their JSON form"}
        passkey = {"type": "object", "description": "A passkey (never its key)"}
        body = {
            "type": "object",
            "properties": {"webauthn": {"type": "object"}, "name": {"type": "string"}},
        }
        # fmt: off
        return (
            ServiceEndpoint("register/options", self._register_options, auth="required",
                            summary="Creation options for a new passkey of this user",
                            response=options),
            ServiceEndpoint("register/verify", self._register_verify, auth="required",
                            summary="Store the passkey the browser created (`webauthn`: its "
                            "toJSON(); `name`: what to call it)", body=body, response=passkey),
            ServiceEndpoint("credentials", self._list, method="GET", auth="required",
                            summary="One's passkeys",
                            response={"type": "array", "items": passkey}),
            ServiceEndpoint("credentials/{credential_id}", self._rename, method="PATCH",
                            auth="required", summary="Rename one of one's passkeys",
                            body={"type": "object", "properties": {"name": {"type": "string"}}},
                            response=passkey),
            ServiceEndpoint("credentials/{credential_id}", self._delete, method="DELETE",
                            auth="required", summary="Remove one of one's passkeys (never "
                            "the last way to log in)", response={"type": "null"}),
            ServiceEndpoint("login/options", self._login_options,
                            summary="Request options for a passwordless login (no username: "
                            "the browser offers the passkeys it has)", response=options),
        )
        # fmt: on

    # -- passwordless login -----------------------------------------------------------------

    async def authenticate(self, params: Mapping[str, Any], ctx: ServiceContext) -> Authenticated:
        """`{webauthn: <assertion>}` answering `login/options`.

        Raises:
            PasskeyRefused, SignCountRegressed, InvalidRequest.
        """
        assertion = _response(params.get("webauthn"))
        await self._redeem(ctx, assertion, _LOGIN)
        user = await self._check_assertion(ctx, assertion, verification=True)
        return Authenticated(user, PASSWORDLESS_AMR)

    async def _login_options(self, request: EndpointRequest, ctx: ServiceContext) -> object:
        """No username asked, so nothing to enumerate; limited per IP, as logins are."""
        await ctx.limiter.hit("webauthn-options", request.info.ip, ctx.limiter.limits.login_per_ip)
        challenge = await self._challenge(ctx, _LOGIN, user_id=None)
        return _json(
            generate_authentication_options(
                rp_id=self.rp_id,
                challenge=challenge,
                timeout=self._timeout(),
                user_verification=UserVerificationRequirement.REQUIRED,
            )
        )

    # -- second factor ----------------------------------------------------------------------

    async def second_factor_challenge(
        self, user: User, ctx: ServiceContext
    ) -> Mapping[str, Any] | None:
        passkeys = await ctx.store.list_user_credentials(user.id, kind=KIND)
        if not passkeys:
            return None
        challenge = await self._challenge(ctx, _SECOND, user_id=user.id)
        return _json(
            generate_authentication_options(
                rp_id=self.rp_id,
                challenge=challenge,
                timeout=self._timeout(),
                allow_credentials=[_descriptor(p) for p in passkeys],
                user_verification=UserVerificationRequirement.PREFERRED,
            )
        )

    async def verify_second_factor(
        self, user: User, proof: object, ctx: ServiceContext
    ) -> tuple[str, ...]:
        """Raises:
        PasskeyRefused, SignCountRegressed, InvalidRequest.
        """
        assertion = _response(proof)
        token_user = await self._redeem(ctx, assertion, _SECOND)
        if token_user != user.id:
            raise PasskeyRefused("the challenge was issued to another login")
        await self._check_assertion(ctx, assertion, verification=False, owner=user.id)
        return SECOND_FACTOR_AMR

    async def can_log_in(self, user: User, ctx: ServiceContext) -> bool:
        return bool(await ctx.store.list_user_credentials(user.id, kind=KIND))

    # -- registration -----------------------------------------------------------------------

    async def _register_options(self, request: EndpointRequest, ctx: ServiceContext) -> object:
        user, session = await self._owner(request, ctx)
        passkeys = await ctx.store.list_user_credentials(user.id, kind=KIND)
        if len(passkeys) >= self.max_passkeys:
            raise PasskeyRegistrationRefused(f"at most {self.max_passkeys} passkeys per account")
        await ctx.limiter.hit("webauthn-register", user.id, ctx.limiter.limits.token_per_ip)
        challenge = await self._challenge(
            ctx, _REGISTER, user_id=user.id, data={"session_id": session.id}
        )
        label = user.username or (user.emails[0].address if user.emails else user.id)
        return _json(
            generate_registration_options(
                rp_id=self.rp_id,
                rp_name=self.rp_name,
                user_name=label,
                user_id=user.id.encode(),
                challenge=challenge,
                timeout=self._timeout(),
                attestation=self.attestation,
                authenticator_selection=AuthenticatorSelectionCriteria(
                    resident_key=ResidentKeyRequirement.PREFERRED,
                    user_verification=UserVerificationRequirement.REQUIRED,
                ),
                exclude_credentials=[_descriptor(p) for p in passkeys],
                supported_pub_key_algs=_ALGORITHMS,
            )
        )

    async def _register_verify(self, request: EndpointRequest, ctx: ServiceContext) -> object:
        """`{webauthn: <credential.toJSON()>, name?}` → the stored passkey.

        Raises:
            PasskeyRegistrationRefused, CredentialAlreadyExists, NotWhileImpersonating,
            StepUpRequired, InvalidRequest.
        """
        user, session = await self._owner(request, ctx)
        response = _response(request.body.get("webauthn"))
        name = _name(request.body.get("name", "Passkey"))
        try:
            token = await ctx.one_time.redeem(
                _challenge_of(response, PasskeyRegistrationRefused), [_REGISTER]
            )
        except InvalidToken:
            raise PasskeyRegistrationRefused("the challenge is unknown, used or expired") from None
        if token.user_id != user.id or token.data.get("session_id") != session.id:
            raise PasskeyRegistrationRefused("the challenge was issued to another session")
        try:
            verified = verify_registration_response(
                credential=dict(response),
                expected_challenge=base64url_to_bytes(_challenge_of(response)),
                expected_rp_id=self.rp_id,
                expected_origin=self.origins,
                require_user_verification=True,
                supported_pub_key_algs=_ALGORITHMS,
            )
            # py_webauthn does not load the key of a `none` attestation: a junk key would
            # be stored and break every later login with it.
            decoded_public_key_to_cryptography(
                decode_credential_public_key(verified.credential_public_key)
            )
        except Exception as exc:  # py_webauthn raises many types for malformed input
            raise PasskeyRegistrationRefused(_reason(exc)) from None
        if self.attestation_formats is not None and verified.fmt not in self.attestation_formats:
            raise PasskeyRegistrationRefused(f"attestation {verified.fmt!r} is not accepted")
        if self.aaguids is not None and verified.aaguid.lower() not in self.aaguids:
            raise PasskeyRegistrationRefused("this authenticator model is not accepted")
        now = ctx.clock()
        credential_id = bytes_to_base64url(verified.credential_id)
        credential = Credential(
            id=_record_id(credential_id),
            user_id=user.id,
            kind=KIND,
            data={
                "credential_id": credential_id,
                "public_key": bytes_to_base64url(verified.credential_public_key),
                "sign_count": verified.sign_count,
                "transports": _transports(response),
                "aaguid": verified.aaguid,
                "fmt": str(verified.fmt),
                "backup_eligible": verified.credential_device_type == "multi_device",
                "backed_up": verified.credential_backed_up,
                "name": name,
                "last_used_at": None,
            },
            created_at=now,
            updated_at=now,
        )
        if not await ctx.store.create_credential(credential):  # raises CredentialAlreadyExists
            raise UserNotFound()
        await ctx.emit("passkey_registered", user=user, session_id=session.id, info=request.info)
        return _view(credential)

    # -- management -------------------------------------------------------------------------

    async def _list(self, request: EndpointRequest, ctx: ServiceContext) -> object:
        user, _ = await ctx.authenticated(request.access_token)
        return [_view(p) for p in await ctx.store.list_user_credentials(user.id, kind=KIND)]

    async def _rename(self, request: EndpointRequest, ctx: ServiceContext) -> object:
        user, _ = await self._owner(request, ctx, recent=False)
        name = _name(request.body.get("name"))
        for _ in range(_CAS_ATTEMPTS):
            passkey = await self._own(ctx, user, request.path_params["credential_id"])
            data = {**passkey.data, "name": name}
            now = ctx.clock()
            if await ctx.store.update_credential(
                passkey.id, version=passkey.version, data=data, now=now
            ):
                return _view(replace(passkey, data=data, updated_at=now))
        raise PasskeyNotFound()

    async def _delete(self, request: EndpointRequest, ctx: ServiceContext) -> object:
        """Refused for the last passkey of a user no other service could log in, and after
        the fact when a concurrent delete left none (the passkey is put back)."""
        user, session = await self._owner(request, ctx)
        passkey = await self._own(ctx, user, request.path_params["credential_id"])
        others = [n for n in await ctx.login_methods(user) if n != self.name]
        passkeys = await ctx.store.list_user_credentials(user.id, kind=KIND)
        if not others and len(passkeys) <= 1:
            raise LastLoginMethod()
        if not await ctx.store.delete_credential(passkey.id):
            raise PasskeyNotFound()
        if not others and not await ctx.store.list_user_credentials(user.id, kind=KIND):
            with contextlib.suppress(CredentialAlreadyExists):
                await ctx.store.create_credential(passkey)
            raise LastLoginMethod()
        await ctx.emit("passkey_removed", user=user, session_id=session.id, info=request.info)
        return None

    async def _owner(
        self, request: EndpointRequest, ctx: ServiceContext, *, recent: bool = True
    ) -> tuple[User, Session]:
        """The caller, who must be the user themselves, signed in recently enough to change
        how they sign in.

        Raises:
            InvalidToken, NotWhileImpersonating, StepUpRequired.
        """
        user, session = await ctx.authenticated(request.access_token)
        if session.impersonator_id is not None:
            raise NotWhileImpersonating()
        if recent and ctx.clock() - session.created_at > self.recent_login:
            raise StepUpRequired(
                "Sign in again to change your passkeys",
                max_age=int(self.recent_login.total_seconds()),
            )
        return user, session

    async def _own(self, ctx: ServiceContext, user: User, credential_id: str) -> Credential:
        """Another user's passkey is answered exactly as an unknown one."""
        passkey = await ctx.store.find_credential(_record_id(credential_id))
        if passkey is None or passkey.user_id != user.id or passkey.kind != KIND:
            raise PasskeyNotFound()
        return passkey

    # -- ceremonies -------------------------------------------------------------------------

    async def _challenge(
        self,
        ctx: ServiceContext,
        kind: str,
        *,
        user_id: str | None,
        data: Mapping[str, Any] | None = None,
    ) -> bytes:
        """A new challenge: a one-time token (256 bits) whose base64url text comes back in
        `clientDataJSON`, so redeeming it needs no state in the client."""
        token = await ctx.one_time.issue(
            kind=kind, user_id=user_id, lifetime=self.challenge_lifetime, data=data
        )
        return base64url_to_bytes(token)

    async def _redeem(self, ctx: ServiceContext, assertion: Mapping[str, Any], kind: str) -> str:
        """Consume the assertion's challenge; returns whom it was issued to ("" for none).

        Raises:
            PasskeyRefused: not issued here for this purpose, used, or expired.
        """
        try:
            token = await ctx.one_time.redeem(_challenge_of(assertion), [kind])
        except InvalidToken:
            raise PasskeyRefused("the challenge is unknown, used or expired") from None
        return token.user_id or ""

    async def _check_assertion(
        self,
        ctx: ServiceContext,
        assertion: Mapping[str, Any],
        *,
        verification: bool,
        owner: str | None = None,
    ) -> User:
        """Verify the assertion against the stored passkey (of `owner`, if given) and record
        its use; returns the passkey's user.

        Raises:
            PasskeyRefused, SignCountRegressed.
        """
        credential_id = assertion.get("id")
        if not isinstance(credential_id, str) or not 0 < len(credential_id) <= _MAX_ID_LENGTH:
            raise PasskeyRefused("malformed credential id")
        passkey = await ctx.store.find_credential(_record_id(credential_id))
        if passkey is None or passkey.kind != KIND:
            raise PasskeyRefused("unknown passkey")
        if owner is not None and passkey.user_id != owner:
            raise PasskeyRefused("not one of this user's passkeys")
        handle = _user_handle(assertion)
        if handle is not None and handle != passkey.user_id.encode():
            raise PasskeyRefused("the user handle is not this passkey's")
        user = await ctx.store.find_user_by_id(passkey.user_id)
        if user is None:
            raise PasskeyRefused("unknown passkey")
        for _ in range(_CAS_ATTEMPTS):
            try:
                verified = verify_authentication_response(
                    credential=dict(assertion),
                    expected_challenge=base64url_to_bytes(_challenge_of(assertion)),
                    expected_rp_id=self.rp_id,
                    expected_origin=self.origins,
                    credential_public_key=base64url_to_bytes(passkey.data["public_key"]),
                    # Counters are compared below, once the signature is known to be good.
                    credential_current_sign_count=0,
                    require_user_verification=verification,
                )
            except Exception as exc:  # py_webauthn raises many types for malformed input
                raise PasskeyRefused(_reason(exc)) from None
            stored, new = int(passkey.data["sign_count"]), verified.new_sign_count
            if (new > 0 or stored > 0) and new <= stored:
                await ctx.emit("passkey_sign_count_regressed", user=user)
                raise SignCountRegressed()
            data = {
                **passkey.data,
                "sign_count": new,
                "backed_up": verified.credential_backed_up,
                "last_used_at": ctx.clock().isoformat(),
            }
            if await ctx.store.update_credential(
                passkey.id, version=passkey.version, data=data, now=ctx.clock()
            ):
                return user
            fresh = await ctx.store.find_credential(passkey.id)
            if fresh is None:
                raise PasskeyRefused("unknown passkey")
            passkey = fresh  # another assertion won: judge this one against its count
        raise PasskeyRefused("the passkey is in use concurrently; try again")

    def _timeout(self) -> int:
        return int(self.challenge_lifetime.total_seconds() * 1000)


def from_settings(settings: ServiceSettings) -> WebAuthnService:
    """As `accounts-server serve` builds it, from `[services.webauthn]` (or
    `ACCOUNTS_WEBAUTHN_RP_ID`, `_RP_NAME`, `_ORIGINS`, `_MAX_PASSKEYS`): the origins default
    to the site URL's origin (the front end's address, as for mailed links; its path, such as
    the hosted pages' `/accounts/ui`, is not part of an origin), the RP ID to the host of
    the first origin.

    Raises:
        ConfigurationError: an unknown setting, or as `WebAuthnService`.
    """
    settings.check_known("rp_id", "rp_name", "origins", "max_passkeys")
    site = urlsplit(settings.site_url)
    origins = settings.texts("origins", (f"{site.scheme}://{site.netloc}",))
    if not origins:
        raise ConfigurationError("services.webauthn.origins is set but names no origin")
    rp_id = settings.text("rp_id") or (urlsplit(origins[0]).hostname or "")
    return WebAuthnService(
        rp_id=rp_id,
        rp_name=settings.text("rp_name") or "accounts-server",
        origins=origins,
        max_passkeys=settings.integer("max_passkeys", MAX_PASSKEYS),
    )


# -- parsing ---------------------------------------------------------------------------------


def _check_rp_id(rp_id: object) -> str:
    if not isinstance(rp_id, str) or not rp_id or rp_id != rp_id.lower() or rp_id.endswith("."):
        raise ConfigurationError("rp_id must be a lower-case domain name, such as example.com")
    try:
        ipaddress.ip_address(rp_id)
    except ValueError:
        pass
    else:
        raise ConfigurationError("rp_id must be a domain name, not an IP address")
    labels = rp_id.split(".")
    if not all(label and len(label) <= 63 for label in labels):
        raise ConfigurationError(f"rp_id {rp_id!r} is not a domain name")
    if len(labels) == 1 and rp_id != "localhost":
        # A single label is a top-level domain: no browser accepts it as an RP ID.
        raise ConfigurationError(f"rp_id {rp_id!r} is not a registrable domain")
    return rp_id


def _check_origin(origin: object, rp_id: str) -> str:
    """An origin as browsers serialize it (`https://host[:port]`), served by `rp_id`."""
    if not isinstance(origin, str):
        raise ConfigurationError("each origin must be a string")
    parts = urlsplit(origin)
    host = parts.hostname or ""
    local = host == "localhost" or host.endswith(".localhost")
    try:
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError:
        raise ConfigurationError(f"origin {origin!r} has an invalid port") from None
    if (
        parts.scheme not in ("https", "http")
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or origin != origin.lower()
    ):
        raise ConfigurationError(
            f"origin {origin!r} must be scheme://host[:port] in lower case, without a path"
        )
    if parts.scheme == "http" and not local:
        raise ConfigurationError(f"origin {origin!r}: WebAuthn needs https (or http://localhost)")
    if host != rp_id and not host.endswith("." + rp_id):
        raise ConfigurationError(
            f"rp_id {rp_id!r} is not a registrable suffix of origin {origin!r}: passkeys "
            f"registered for it could not be used there"
        )
    return origin


def _response(value: object) -> dict[str, Any]:
    """The browser's `credential.toJSON()`.

    Raises:
        InvalidRequest: not an object.
    """
    if not isinstance(value, dict):
        raise InvalidRequest("webauthn must be the credential's toJSON() object")
    return value


def _challenge_of(response: Mapping[str, Any], error: type[AccountsError] = PasskeyRefused) -> str:
    """The challenge in `clientDataJSON`, as the base64url text the server issued.

    Raises:
        `error`: no readable clientDataJSON.
    """
    inner = response.get("response")
    client_data = inner.get("clientDataJSON") if isinstance(inner, dict) else None
    try:
        if not isinstance(client_data, str) or len(client_data) > 8192:
            raise ValueError("no clientDataJSON")
        parsed = parse_client_data_json(base64url_to_bytes(client_data))
    except Exception:
        raise error("clientDataJSON is missing or malformed") from None
    return bytes_to_base64url(parsed.challenge)


def _user_handle(assertion: Mapping[str, Any]) -> bytes | None:
    inner = assertion.get("response")
    handle = inner.get("userHandle") if isinstance(inner, dict) else None
    if handle is None or handle == "":
        return None
    try:
        if not isinstance(handle, str):
            raise ValueError("not a string")
        return base64url_to_bytes(handle) or None
    except Exception:
        raise PasskeyRefused("malformed user handle") from None


def _transports(response: Mapping[str, Any]) -> list[str]:
    inner = response.get("response")
    given = inner.get("transports") if isinstance(inner, dict) else None
    known = {t.value for t in AuthenticatorTransport}
    return sorted({t for t in given if t in known}) if isinstance(given, list) else []


def _name(value: object) -> str:
    """Raises:
    InvalidRequest: not 1 to 64 printable characters.
    """
    if not isinstance(value, str):
        raise InvalidRequest("name must be a string")
    name = unicodedata.normalize("NFC", value).strip()
    if not 0 < len(name) <= _MAX_NAME_LENGTH or any(
        unicodedata.category(c).startswith("C") for c in name
    ):
        raise InvalidRequest(f"name must be 1 to {_MAX_NAME_LENGTH} printable characters")
    return name


def _reason(exc: Exception) -> str:
    """py_webauthn's own refusals say what failed; anything else it raised is malformed input."""
    from webauthn.helpers.exceptions import WebAuthnException

    return str(exc) if isinstance(exc, WebAuthnException) else "malformed response"


def _record_id(credential_id: str) -> str:
    """Unique across users: the store refuses a second record with one id. Long ids are
    hashed so the record id stays short."""
    if len(credential_id) > 128:
        credential_id = "sha256-" + hashlib.sha256(credential_id.encode()).hexdigest()
    return f"{KIND}:{credential_id}"


def _descriptor(passkey: Credential) -> PublicKeyCredentialDescriptor:
    transports = []
    for value in passkey.data.get("transports", []):
        try:
            transports.append(AuthenticatorTransport(value))
        except ValueError:
            continue
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(passkey.data["credential_id"]), transports=transports or None
    )


def _json(
    options: PublicKeyCredentialCreationOptions | PublicKeyCredentialRequestOptions,
) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(options_to_json(options))
    return parsed


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _view(passkey: Credential) -> dict[str, Any]:
    """What the user sees of a passkey: never its public key or counter."""
    last = passkey.data.get("last_used_at")
    return {
        "id": passkey.data["credential_id"],
        "name": passkey.data["name"],
        "createdAt": _ms(passkey.created_at),
        "lastUsedAt": _ms(datetime.fromisoformat(last)) if last else None,
        "transports": passkey.data.get("transports", []),
        "aaguid": passkey.data.get("aaguid"),
        "backupEligible": passkey.data.get("backup_eligible", False),
        "backedUp": passkey.data.get("backed_up", False),
    }
