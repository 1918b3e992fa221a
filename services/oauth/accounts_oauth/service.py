"""OpenID Connect login: authorization code flow with PKCE S256, `state` and `nonce`.

Routes (under the accounts prefix):
  GET  /oauth/{provider}/authorize   302 to the provider; an HttpOnly cookie binds the flow to
                                      this browser
  GET  /oauth/{provider}/callback    the provider's redirect: a LoginResult, or (with
                                      `frontend_url`) a 302 carrying a one-time code, never tokens
  POST /oauth/exchange {code}        that code for a LoginResult
  POST /oauth/authenticate           native clients: {provider, idToken[, nonce]}

`state`, `nonce` and the PKCE verifier are 256+ random bits, kept server-side as one single-use
token (10 min) keyed by the SHA-256 of `state`, so a replayed or forged `state` is refused, and
only the browser holding the cookie can complete its flow. ID tokens are checked against the
provider's JWKS with its asymmetric algorithms only, and for `iss`, `aud`/`azp`, `exp`, `iat`,
`sub` and the `nonce`. Users are keyed by (provider, `sub`); an existing account is linked only
when both the provider and we have verified the email. Provider tokens are not stored.
Written only against `accounts_server`'s public API.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from accounts_server import (
    AuthenticationFailed,
    ConfigurationError,
    Email,
    EmailAlreadyExists,
    EndpointRequest,
    IdentityAlreadyLinked,
    InvalidEmail,
    InvalidRequest,
    InvalidToken,
    LoginNotAllowed,
    LoginResult,
    NotFound,
    Redirect,
    ServiceContext,
    ServiceEndpoint,
    ServiceSettings,
    SignInLink,
    TemporarilyUnavailable,
    User,
    canonical_email,
    validate_email,
)

__all__ = [
    "IdentityInfo",
    "OAuthFailed",
    "OAuthService",
    "OIDCProvider",
    "ProviderNotFound",
    "ProviderUnavailable",
    "from_settings",
]

STATE_KIND = "oauth-state"
CODE_KIND = "oauth-code"
STATE_LIFETIME = timedelta(minutes=10)
CODE_LIFETIME = timedelta(seconds=60)
COOKIE = "accounts_oauth"
#: Never `none` and never HMAC: the client secret must not be usable to forge ID tokens.
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LEEWAY = 30


class OAuthFailed(AuthenticationFailed):
    code = "OAuthFailed"
    default_message = "Login with the identity provider failed"


class ProviderNotFound(NotFound):
    code = "ProviderNotFound"
    default_message = "Unknown identity provider"


class ProviderUnavailable(TemporarilyUnavailable):
    code = "ProviderUnavailable"
    default_message = "The identity provider could not be reached"


@dataclass(frozen=True, slots=True, kw_only=True)
class OIDCProvider:
    """One OpenID provider. `redirect_uri` is this server's callback, exactly as registered at
    the provider (`https://api.example/accounts/oauth/<name>/callback`).

    Raises:
        ConfigurationError: a name that is not a path segment, or `openid` missing from scopes.
    """

    name: str
    issuer: str
    client_id: str
    redirect_uri: str
    client_secret: str | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    #: `client_secret_basic` (RFC 6749 §2.3.1, the default) or `client_secret_post`.
    token_auth: str = "client_secret_basic"  # noqa: S105 (a method name, not a secret)
    #: What a sign-in button says ("Sign in with <label>"); the name if not given.
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or "openid" not in self.scopes:
            raise ConfigurationError("a provider needs an identifier name and the openid scope")
        if self.token_auth not in ("client_secret_basic", "client_secret_post"):
            raise ConfigurationError("token_auth is client_secret_basic or client_secret_post")


@dataclass(frozen=True, slots=True)
class IdentityInfo:
    """What `on_new_identity` sees before a user is created for an unknown identity."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    claims: Mapping[str, Any] = field(repr=False)


@dataclass
class _Metadata:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: list[str]
    keys: KeySet | None = None


OnNewIdentity = Callable[[IdentityInfo], bool | Awaitable[bool]]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class OAuthService:
    """Raises:
    ConfigurationError: no providers, or two with one name.
    """

    name = "oauth"

    def __init__(
        self,
        providers: Sequence[OIDCProvider],
        *,
        frontend_url: str | None = None,
        on_new_identity: OnNewIdentity | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.providers = {p.name: p for p in providers}
        if not providers or len(self.providers) != len(providers):
            raise ConfigurationError("OAuthService needs providers with distinct names")
        self.frontend_url = frontend_url
        self.on_new_identity = on_new_identity
        self.timeout = timeout
        self._metadata: dict[str, _Metadata] = {}

    def endpoints(self) -> Sequence[ServiceEndpoint]:
        return (
            ServiceEndpoint(
                "{provider}/authorize",
                self._authorize,
                method="GET",
                summary="Start a login: 302 to the identity provider",
                redirects=True,
            ),
            ServiceEndpoint(
                "{provider}/callback",
                self._callback,
                method="GET",
                summary="The provider's redirect: a LoginResult, or a 302 with a one-time code",
                response={"$ref": "#/components/schemas/LoginResult"},
                redirects=True,
            ),
            ServiceEndpoint(
                "exchange",
                self._exchange,
                summary="Exchange the one-time code for a LoginResult",
                body={"type": "object", "properties": {"code": {"type": "string"}}},
                response={"$ref": "#/components/schemas/LoginResult"},
            ),
        )

    def sign_in_links(self) -> Sequence[SignInLink]:
        """`OffersSignInLinks`: one button per provider on the hosted sign-in page."""
        return tuple(
            SignInLink(f"Sign in with {p.label or p.name}", f"/{self.name}/{p.name}/authorize")
            for p in self.providers.values()
        )

    # -- provider metadata ------------------------------------------------------------------

    def _provider(self, name: object) -> OIDCProvider:
        provider = self.providers.get(name) if isinstance(name, str) else None
        if provider is None:
            raise ProviderNotFound()
        return provider

    async def _get_json(self, url: str, **kwargs: Any) -> Any:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.request(kwargs.pop("method", "GET"), url, **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable() from exc
        if response.status_code >= 500:
            raise ProviderUnavailable()
        try:
            body = response.json()
        except ValueError as exc:
            raise OAuthFailed(
                "the identity provider answered with something other than JSON"
            ) from exc
        if response.status_code >= 400:
            raise OAuthFailed(f"the identity provider refused: {body.get('error', 'error')}")
        return body

    async def _discover(self, provider: OIDCProvider) -> _Metadata:
        """Discovery (OpenID Connect Discovery 1.0), cached; the issuer must match exactly."""
        cached = self._metadata.get(provider.name)
        if cached is not None:
            return cached
        url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(url)
        if document.get("issuer") != provider.issuer:
            raise OAuthFailed("the provider's discovery document names another issuer")
        offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        metadata = _Metadata(
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            algorithms=[alg for alg in offered if alg in ASYMMETRIC],
        )
        self._metadata[provider.name] = metadata
        return metadata

    async def _keys(self, metadata: _Metadata, *, refresh: bool = False) -> KeySet:
        if metadata.keys is None or refresh:
            metadata.keys = KeySet.import_key_set(await self._get_json(metadata.jwks_uri))
        return metadata.keys

    # -- ID tokens --------------------------------------------------------------------------

    async def verify_id_token(
        self, provider: OIDCProvider, id_token: object, *, nonce: str | None
    ) -> Mapping[str, Any]:
        """The ID token's claims, if it is the provider's, for us, current, and carries
        `nonce` (when one was sent).

        Raises:
            OAuthFailed.
        """
        if not isinstance(id_token, str) or len(id_token) > 16_384:
            raise OAuthFailed("missing or malformed ID token")
        metadata = await self._discover(provider)
        if not metadata.algorithms:
            raise OAuthFailed("the provider offers no acceptable signing algorithm")
        try:
            try:
                token = jwt.decode(id_token, await self._keys(metadata), metadata.algorithms)
            except JoseError:
                # The provider may have rotated its keys: fetch once more, then give up.
                keys = await self._keys(metadata, refresh=True)
                token = jwt.decode(id_token, keys, metadata.algorithms)
            registry = JWTClaimsRegistry(
                leeway=LEEWAY,
                iss={"essential": True, "value": provider.issuer},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                aud={"essential": True},
            )
            registry.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise OAuthFailed(f"the ID token was refused: {type(exc).__name__}") from exc
        claims = token.claims
        audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if provider.client_id not in audience:
            raise OAuthFailed("the ID token is for another client")
        if len(audience) > 1 and claims.get("azp") != provider.client_id:
            raise OAuthFailed("the ID token's authorized party is another client")
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OAuthFailed("the ID token's nonce does not match this login")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise OAuthFailed("the ID token has no subject")
        return claims

    # -- users ------------------------------------------------------------------------------

    async def user_for(
        self, ctx: ServiceContext, provider: OIDCProvider, claims: Mapping[str, Any]
    ) -> User:
        """The user of this identity: found by (provider, sub); else an existing user linked
        only when the provider *and* we have verified the email; else a new user (unless
        `on_new_identity` says no).

        Raises:
            LoginNotAllowed: `on_new_identity` refused (or failed).
        """
        subject = str(claims["sub"])
        user = await ctx.store.find_user_by_identity(provider.name, subject)
        if user is not None:
            return user
        email = self._verified_email(claims)
        if email is not None:
            existing = await ctx.store.find_user_by_email(email)
            key = canonical_email(email)
            ours = (
                []
                if existing is None
                else [e for e in existing.emails if canonical_email(e.address) == key]
            )
            if existing is not None and ours and ours[0].verified:
                with contextlib.suppress(IdentityAlreadyLinked):  # linked concurrently: found below
                    await ctx.store.add_identity(
                        existing.id, provider.name, subject, now=ctx.clock()
                    )
                found = await ctx.store.find_user_by_identity(provider.name, subject)
                if found is not None:
                    return found
        return await self._create(ctx, provider, subject, email, claims)

    @staticmethod
    def _verified_email(claims: Mapping[str, Any]) -> str | None:
        if claims.get("email_verified") is not True:
            return None
        try:
            return validate_email(claims.get("email"))
        except InvalidEmail:
            return None

    async def _create(
        self,
        ctx: ServiceContext,
        provider: OIDCProvider,
        subject: str,
        email: str | None,
        claims: Mapping[str, Any],
    ) -> User:
        info = IdentityInfo(provider.name, subject, email, email is not None, claims)
        if self.on_new_identity is not None:
            try:
                allowed = self.on_new_identity(info)
                if inspect.isawaitable(allowed):
                    allowed = await allowed
            except Exception:
                allowed = False
            if not allowed:
                raise LoginNotAllowed()
        # Only a provider-verified address is attached (marked verified); when it already
        # belongs to someone whose address we have not verified, the new user goes without it.
        for emails in ([Email(email, verified=True)] if email else [], []):
            try:
                return await ctx.create_user(emails=emails, identities=[(provider.name, subject)])
            except EmailAlreadyExists:
                continue
            except IdentityAlreadyLinked:
                found = await ctx.store.find_user_by_identity(provider.name, subject)
                if found is None:
                    raise
                return found
        raise OAuthFailed("could not create a user for this identity")

    async def link(self, ctx: ServiceContext, user_id: str, provider: str, id_token: str) -> None:
        """Explicit linking by a logged-in user (the caller checked who they are): the
        identity in `id_token` now logs into `user_id`.

        Raises:
            ProviderNotFound, OAuthFailed, IdentityAlreadyLinked.
        """
        chosen = self._provider(provider)
        claims = await self.verify_id_token(chosen, id_token, nonce=None)
        await ctx.store.add_identity(user_id, chosen.name, str(claims["sub"]), now=ctx.clock())

    # -- native clients ---------------------------------------------------------------------

    async def authenticate(self, params: Mapping[str, Any], ctx: ServiceContext) -> User | None:
        """`{provider, idToken, nonce?}` from a native client that ran the flow itself.

        Raises:
            ProviderNotFound, OAuthFailed, LoginNotAllowed.
        """
        provider = self._provider(params.get("provider"))
        nonce = params.get("nonce")
        if nonce is not None and not isinstance(nonce, str):
            raise InvalidRequest("nonce must be a string")
        claims = await self.verify_id_token(provider, params.get("idToken"), nonce=nonce)
        return await self.user_for(ctx, provider, claims)

    # -- browser flow -----------------------------------------------------------------------

    async def _authorize(self, request: EndpointRequest, ctx: ServiceContext) -> Redirect:
        provider = self._provider(request.path_params.get("provider"))
        metadata = await self._discover(provider)
        nonce, verifier, binding = (secrets.token_urlsafe(n) for n in (32, 48, 32))
        # The single-use token *is* the state; what the callback needs rides with it.
        state = await ctx.one_time.issue(
            kind=STATE_KIND,
            user_id=None,
            lifetime=STATE_LIFETIME,
            data={
                "provider": provider.name,
                "nonce": nonce,
                "verifier": verifier,
                "binding": _digest(binding),
            },
        )
        extra = {}
        hint = request.query.get("login_hint")
        if isinstance(hint, str) and len(hint) <= 256:
            extra["login_hint"] = hint
        location = prepare_grant_uri(
            metadata.authorization_endpoint,
            client_id=provider.client_id,
            response_type="code",
            redirect_uri=provider.redirect_uri,
            scope=" ".join(provider.scopes),
            state=state,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
            nonce=nonce,
            **extra,
        )
        return Redirect(location, cookies={COOKIE: binding})

    async def _callback(self, request: EndpointRequest, ctx: ServiceContext) -> object:
        provider = self._provider(request.path_params.get("provider"))
        query = request.query
        if "error" in query:
            raise OAuthFailed(f"the identity provider said: {query['error'][:64]}")
        state, code = query.get("state"), query.get("code")
        if not isinstance(code, str) or not code:
            raise InvalidRequest("the callback needs code and state")
        await ctx.limiter.hit("token-ip", request.info.ip, ctx.limiter.limits.token_per_ip)
        record = await ctx.one_time.redeem(state, [STATE_KIND])
        data = record.data
        binding = request.cookies.get(COOKIE, "")
        if data.get("provider") != provider.name or not hmac.compare_digest(
            _digest(binding), str(data.get("binding"))
        ):
            raise InvalidToken(reason="binding")
        if "iss" in query and query["iss"] != provider.issuer:  # RFC 9207 mix-up defence
            raise OAuthFailed("the response names another issuer")
        claims = await self._redeem_code(provider, code, str(data["verifier"]), str(data["nonce"]))
        user = await self.user_for(ctx, provider, claims)
        if self.frontend_url is None:
            return await ctx.login(user, request.info)
        one_time = await ctx.one_time.issue(kind=CODE_KIND, user_id=user.id, lifetime=CODE_LIFETIME)
        separator = "&" if "?" in self.frontend_url else "?"
        location = f"{self.frontend_url}{separator}{urlencode({'code': one_time})}"
        return Redirect(location, cookies={COOKIE: None})

    async def _redeem_code(
        self, provider: OIDCProvider, code: str, verifier: str, nonce: str
    ) -> Mapping[str, Any]:
        metadata = await self._discover(provider)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider.redirect_uri,
            "code_verifier": verifier,
        }
        auth: tuple[str, str] | None = None
        if provider.token_auth == "client_secret_post" or provider.client_secret is None:  # noqa: S105
            form["client_id"] = provider.client_id
            if provider.client_secret is not None:
                form["client_secret"] = provider.client_secret
        else:
            auth = (provider.client_id, provider.client_secret)
        answer = await self._get_json(
            metadata.token_endpoint,
            method="POST",
            data=form,
            auth=auth,
            headers={"Accept": "application/json"},
        )
        return await self.verify_id_token(provider, answer.get("id_token"), nonce=nonce)

    async def _exchange(self, request: EndpointRequest, ctx: ServiceContext) -> LoginResult:
        """`{code}` → LoginResult: the front end's half of the redirect flow."""
        await ctx.limiter.hit("token-ip", request.info.ip, ctx.limiter.limits.token_per_ip)
        user_id, _ = await ctx.one_time.redeem_for_user(request.body.get("code"), [CODE_KIND])
        user = await ctx.store.find_user_by_id(user_id)
        if user is None:
            raise InvalidToken(reason="user")
        return await ctx.login(user, request.info)


_PROVIDER_KEYS = (
    "issuer",
    "client_id",
    "client_secret",
    "redirect_uri",
    "scopes",
    "token_auth",
    "label",
)


def from_settings(settings: ServiceSettings) -> OAuthService | None:
    """As `accounts-server serve` builds it: one provider per `[services.oauth.providers.<name>]`
    table (`issuer`, `client_id`, `client_secret` (by reference: `{ env = "..." }`),
    `redirect_uri`, and optionally `scopes` and `token_auth`), and `frontend_url`, the page the
    browser is sent to with a one-time code after a login (without it, the callback answers the
    login result itself, as `OAuthService` does). With no provider there is nothing to serve:
    None, so `serve` runs without this service.

    Raises:
        ConfigurationError: an unknown, missing or bad setting, named.
    """
    settings.check_known("providers", "frontend_url")
    providers = []
    for name, table in settings.tables("providers").items():
        provider = ServiceSettings(name=f"{settings.name}.providers.{name}", values=table)
        provider.check_known(*_PROVIDER_KEYS)
        defaults = OIDCProvider.__dataclass_fields__
        providers.append(
            OIDCProvider(
                name=name,
                issuer=provider.required("issuer"),
                client_id=provider.required("client_id"),
                client_secret=provider.text("client_secret"),
                redirect_uri=provider.required("redirect_uri"),
                scopes=provider.texts("scopes", defaults["scopes"].default),  # type: ignore[arg-type]
                token_auth=provider.text("token_auth") or defaults["token_auth"].default,  # type: ignore[arg-type]
                label=provider.text("label"),
            )
        )
    if not providers:
        return None
    return OAuthService(providers, frontend_url=settings.text("frontend_url"))
