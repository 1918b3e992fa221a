"""The password login service: register, login, email verification, reset, enrollment, change
and admin set, with the accounts-js routes and error codes.

Written only against `accounts_server`'s public API, as any third-party service would be.
Enumeration (ASVS 2.2.1, OWASP authentication cheat sheet): unknown users and wrong passwords
cost the same one hash and give the same `InvalidCredentials`; reset and verification requests
answer `null` at once and do their lookup and mailing after the response, so neither the answer
nor its timing tells whether an account exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, cast

from accounts_server import (
    Authenticated,
    ConfigurationError,
    Email,
    EmailAlreadyExists,
    EndpointRequest,
    Forbidden,
    InvalidCredentials,
    InvalidRequest,
    InvalidToken,
    Mailer,
    MailMessage,
    MailTemplate,
    MailUnavailable,
    NotWhileImpersonating,
    ResetPasswordLinkExpired,
    ServiceContext,
    ServiceEndpoint,
    ServiceSettings,
    User,
    UsernameOrEmailRequired,
    UserNotFound,
    VerifyEmailLinkExpired,
    canonical_email,
    canonical_username,
    validate_email,
    validate_username,
)

from .hashing import PasswordHasher
from .policy import PasswordPolicy, normalize

__all__ = ["CannotRemoveLastEmail", "MailSettings", "PasswordService", "from_settings"]

_ARGON2 = "argon2"
_BCRYPT = "bcrypt"
RESET_LIFETIME = timedelta(minutes=60)
VERIFY_LIFETIME = timedelta(hours=24)
ENROLL_LIFETIME = timedelta(days=7)
_FAILED_LOGIN = "login-fail"
Lookup = Callable[[ServiceContext], Awaitable[User | None]]


class CannotRemoveLastEmail(Forbidden):
    code = "CannotRemoveLastEmail"
    default_message = "Cannot remove the only way this user logs in"


def _templates() -> dict[str, MailTemplate]:
    return {
        "verify": MailTemplate(
            subject="Verify your email",
            text="To verify your email address, open this link:\n\n$url\n\nIt expires in 24 hours.",
            html='<p>To verify your email address, <a href="$url">open this link</a>.</p>',
        ),
        "reset": MailTemplate(
            subject="Reset your password",
            text="To reset your password, open this link:\n\n$url\n\nIt expires in 60 minutes. "
            "If you did not ask for this, ignore this mail.",
            html='<p>To reset your password, <a href="$url">open this link</a>.</p>',
        ),
        "exists": MailTemplate(
            subject="Your account",
            text="Someone (perhaps you) tried to create an account with this address, which "
            "already has one. If it was you, sign in, or set a new password here:\n\n$url\n\n"
            "It expires in 60 minutes. If it was not you, ignore this mail.",
            html="<p>Someone tried to create an account with this address, which already has "
            'one. If it was you, sign in or <a href="$url">set a new password</a>.</p>',
        ),
        "enroll": MailTemplate(
            subject="Set your password",
            text="An account was created for you. Set your password here:\n\n$url\n\n"
            "It expires in 7 days.",
            html='<p>An account was created for you. <a href="$url">Set your password</a>.</p>',
        ),
        "two_factor_enabled": MailTemplate(
            subject="Two-factor authentication is on",
            text="Two-factor authentication was turned on for your account; signing in now "
            "also needs a code from your authenticator app. Your other sessions were ended.\n\n"
            "If this was not you, reset your password and contact us.",
            html="<p>Two-factor authentication was turned on for your account. If this was not "
            "you, reset your password and contact us.</p>",
        ),
        "two_factor_disabled": MailTemplate(
            subject="Two-factor authentication is off",
            text="Two-factor authentication was turned off for your account; signing in now "
            "needs only your password. Your other sessions were ended.\n\n"
            "If this was not you, reset your password and contact us.",
            html="<p>Two-factor authentication was turned off for your account. If this was not "
            "you, reset your password and contact us.</p>",
        ),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class MailSettings:
    """Where links point (accounts-js defaults) and what the mails say."""

    site_url: str = "http://localhost:3000"
    paths: Mapping[str, str] = field(
        default_factory=lambda: {
            "verify": "/verify-email/",
            "reset": "/reset-password/",
            "exists": "/reset-password/",
            "enroll": "/enroll-account/",
        }
    )
    templates: Mapping[str, MailTemplate] = field(default_factory=_templates)

    def notice(self, kind: str, to: str) -> MailMessage:
        """A mail that tells, without a link (a security change on the account)."""
        return self.templates[kind].render(to, {"email": to, "url": "", "token": ""})

    def message(self, kind: str, to: str, token: str) -> MailMessage:
        url = f"{self.site_url.rstrip('/')}{self.paths[kind]}{token}"
        return self.templates[kind].render(to, {"url": url, "token": token, "email": to})


class PasswordService:
    """Password login. Without a `mailer`, the mail flows answer `MailUnavailable` for every
    request alike (so even that does not enumerate). Offers `SecretService`, so the server
    re-checks the password before an account is deleted and the CLI can create users.

    `ambiguous_registration` (accounts-js's `ambiguousErrorMessages` for sign-up): `register`
    with an email answers `{}` whether the address is new or taken, after the same one hash;
    a new account gets a verification mail, the owner of a taken address a mail saying so with
    a reset link. Without it, a taken address answers 409 `EmailAlreadyExists` (behind the
    10-an-hour registration limit), as accounts-js does by default. Usernames are public
    handles and always answer 409 when taken.

    Raises:
        ConfigurationError: `ambiguous_registration` without a mailer (nobody would learn).
    """

    name = "password"

    def __init__(
        self,
        *,
        hasher: PasswordHasher | None = None,
        policy: PasswordPolicy | None = None,
        mailer: Mailer | None = None,
        mail: MailSettings | None = None,
        ambiguous_registration: bool = False,
    ) -> None:
        if ambiguous_registration and mailer is None:
            raise ConfigurationError("ambiguous_registration needs a mailer")
        self.hasher = hasher or PasswordHasher()
        self.policy = policy or PasswordPolicy()
        self.mailer = mailer
        self.mail = mail or MailSettings()
        self.ambiguous_registration = ambiguous_registration

    def endpoints(self) -> Sequence[ServiceEndpoint]:
        user = _object(username=_STRING, email=_STRING, password=_STRING)
        # A table: one endpoint per entry (fmt: off keeps its columns).
        # fmt: off
        return (
            ServiceEndpoint("register", self._register,
                            summary="Create a user with a password",
                            body=_object(user=user), response=_object(userId=_STRING)),
            ServiceEndpoint("verifyEmail", self._verify_email,
                            summary="Verify an address with the token mailed to it",
                            body=_object(token=_STRING), response=_NULL),
            ServiceEndpoint("resetPassword", self._reset_password,
                            summary="Set a new password with a reset or enrollment token",
                            body=_object(token=_STRING, newPassword=_STRING), response=_NULL),
            ServiceEndpoint("sendVerificationEmail", self._send_verification_email,
                            summary="Mail a verification link (one answer for any address)",
                            body=_object(email=_STRING), response=_NULL),
            ServiceEndpoint("sendResetPasswordEmail", self._send_reset_password_email,
                            summary="Mail a reset link (one answer for any address)",
                            body=_object(email=_STRING), response=_NULL),
            ServiceEndpoint("addEmail", self._add_email, auth="required",
                            summary="Add an address to the logged-in user",
                            body=_object(newEmail=_STRING), response=_NULL),
            ServiceEndpoint("changePassword", self._change_password, auth="required",
                            summary="Change the logged-in user's password; other sessions end",
                            body=_object(oldPassword=_STRING, newPassword=_STRING),
                            response=_NULL),
            ServiceEndpoint("twoFactorSecret", self._two_factor_secret, auth="optional",
                            summary="A new TOTP secret to enable two-factor with (10 minutes)",
                            body={"type": "object"}, response=_object(secret=_SECRET)),
            ServiceEndpoint("twoFactorSet", self._two_factor_set, auth="required",
                            summary="Turn two-factor on with the secret and a current code; "
                            "other sessions end; answers the recovery codes, shown once",
                            body=_object(secret=_SECRET, code=_STRING), response=_CODES),
            ServiceEndpoint("twoFactorUnset", self._two_factor_unset, auth="required",
                            summary="Turn two-factor off with a current or recovery code; "
                            "other sessions end", body=_object(code=_STRING),
                            response={"type": "object"}),
            ServiceEndpoint("twoFactorRecoveryCodes", self._two_factor_recovery_codes,
                            auth="required",
                            summary="New recovery codes for a current code; the old ones end",
                            body=_object(code=_STRING), response=_CODES),
            ServiceEndpoint("twoFactorStatus", self._two_factor_status, method="GET",
                            auth="required",
                            summary="Whether two-factor is on, and how many recovery codes "
                            "are left", response=_STATUS),
        )
        # fmt: on

    # -- login ------------------------------------------------------------------------------

    async def authenticate(
        self, params: Mapping[str, Any], ctx: ServiceContext
    ) -> Authenticated | None:
        """The password first, then, for a user with two-factor on, the `code` (TOTP or a
        recovery code): a wrong password never hears of two-factor.

        Raises:
            InvalidRequest: `user`, `password` or `code` missing or of the wrong type.
            RateLimited: too many failures for this identifier (whether or not it exists),
                or too many wrong codes for the account (whatever the password).
            TwoFactorCodeRequired, TwoFactorCodeMismatch.
        """
        raw = params.get("password")
        password = normalize(raw, max_length=self.policy.max_length)
        lookup, key = self._identity(params.get("user"))
        # Failures count per identifier as typed and, once it resolves, per account: ten by
        # email also lock the username and the id. An unknown identifier has only its own
        # counter, which locks after as many failures, so a 429 reveals nothing.
        keys = [key]
        tiers = ctx.limiter.limits.failed_logins
        await ctx.limiter.check(_FAILED_LOGIN, key, tiers)
        user = await lookup(ctx)
        if user is None:
            await self.hasher.verify_dummy(password)  # the same one hash as a wrong password
        else:
            keys.append(_account_key(user.id))
            await ctx.limiter.check(_FAILED_LOGIN, keys[-1], tiers)
            await ctx.two_factor.check_not_locked(user.id)
        if user is None or not await self._verify(ctx, user, password, raw):
            for counted in keys:
                await ctx.limiter.count(_FAILED_LOGIN, counted, tiers)
            return None
        for counted in keys:
            await ctx.limiter.clear(_FAILED_LOGIN, counted, tiers)
        # A code given here is checked here (accounts-js's way); without one, the server asks
        # for whichever second factor the user has (mfa.py).
        code = params.get("code")
        second = () if code is None or code == "" else await ctx.two_factor.verify(user, code)
        return Authenticated(user, ("pwd", *second), second_factor=True)

    async def _verify(self, ctx: ServiceContext, user: User, password: str, raw: object) -> bool:
        """One hash verification whatever happens; legacy bcrypt and outdated argon2 hashes are
        replaced by current argon2id on success."""
        data = await ctx.store.get_service_data(user.id, self.name) or {}
        encoded, legacy = data.get(_ARGON2), data.get(_BCRYPT)
        if isinstance(encoded, str):
            if not await self.hasher.verify(encoded, password):
                return False
            upgrade = self.hasher.needs_rehash(encoded)
        elif isinstance(legacy, str) and isinstance(raw, str):
            # accounts-js hashed the password as typed, without normalising it.
            if not await self.hasher.verify_bcrypt(legacy, raw):
                return False
            upgrade = True
        else:
            await self.hasher.verify_dummy(password)
            return False
        if upgrade:
            await self._store_password(ctx, user.id, password)
        return True

    def _identity(self, identity: object) -> tuple[Lookup, str]:
        """How to find the user, and the rate-limit key (the canonical identifier as given).
        accounts-js sends a string (email if it has an `@`, else a username) or exactly one of
        {id, username, email}."""
        if isinstance(identity, str):
            kind = "email" if "@" in identity else "username"
            value = identity
        elif isinstance(identity, Mapping):
            given = [(k, v) for k, v in identity.items() if v is not None]
            if len(given) != 1 or given[0][0] not in ("id", "username", "email"):
                raise InvalidRequest("user must have exactly one of id, username or email")
            kind, value = given[0]
            if not isinstance(value, str):
                raise InvalidRequest("user must have exactly one of id, username or email")
        else:
            raise InvalidRequest("user must be a string or an object")
        if len(value) > 256:
            raise InvalidRequest("identifier too long")

        async def lookup(ctx: ServiceContext) -> User | None:
            if kind == "id":
                return await ctx.store.find_user_by_id(value)
            if kind == "username":
                return await ctx.store.find_user_by_username(value)
            return await ctx.store.find_user_by_email(value)

        canonical = {"email": canonical_email, "username": canonical_username}.get(kind, str)
        return lookup, f"{kind}:{canonical(value)}"

    async def _store_password(self, ctx: ServiceContext, user_id: str, password: str) -> bool:
        encoded = await self.hasher.hash(password)
        return await ctx.store.set_service_data(
            user_id, self.name, {_ARGON2: encoded}, now=ctx.clock()
        )

    # -- SecretService: what the server asks of a service whose users know a secret -----------

    async def has_secret(self, user_id: str, ctx: ServiceContext) -> bool:
        return bool(await ctx.store.get_service_data(user_id, self.name))

    async def can_log_in(self, user: User, ctx: ServiceContext) -> bool:
        """`LoginAvailability`: a user with a password can log in with it."""
        return await self.has_secret(user.id, ctx)

    async def verify_secret(self, user: User, secret: object, ctx: ServiceContext) -> bool:
        """Raises:
        RateLimited: too many failures for this user.
        """
        tiers = ctx.limiter.limits.failed_logins
        key = _account_key(user.id)
        await ctx.limiter.check(_FAILED_LOGIN, key, tiers)
        if not isinstance(secret, str):
            await self.hasher.verify_dummy("")
            ok = False
        else:
            password = normalize(secret, max_length=self.policy.max_length)
            ok = await self._verify(ctx, user, password, secret)
        if not ok:
            await ctx.limiter.count(_FAILED_LOGIN, key, tiers)
        return ok

    async def secret_data(self, secret: str) -> Mapping[str, Any]:
        """Raises:
        InvalidPassword.
        """
        return {_ARGON2: await self.hasher.hash(self.policy.check(secret))}

    # -- users and passwords ----------------------------------------------------------------

    async def create_user(
        self,
        ctx: ServiceContext,
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
        password = self.policy.check(password)
        # Cheap checks before the expensive hash.
        username = None if username is None else validate_username(username)
        email = None if email is None else validate_email(email)
        if username is None and email is None:
            raise UsernameOrEmailRequired()
        return await ctx.create_user(
            username=username,
            emails=[email] if email is not None else [],
            services={self.name: {_ARGON2: await self.hasher.hash(password)}},
        )

    async def set_password(self, ctx: ServiceContext, user_id: str, new_password: str) -> None:
        """Admin: replace the password; every session and outstanding reset link ends.

        Raises:
            InvalidPassword, UserNotFound.
        """
        password = self.policy.check(new_password)
        if not await self._store_password(ctx, user_id, password):
            raise UserNotFound()
        await self._after_password_change(ctx, user_id)

    async def change_password(
        self,
        ctx: ServiceContext,
        access_token: str | None,
        old_password: object,
        new_password: object,
    ) -> None:
        """The logged-in user changes their password; other sessions end, this one stays.

        Raises:
            InvalidToken, InvalidCredentials (wrong current password), InvalidPassword.
        """
        user, session = await ctx.authenticated(access_token)
        new = self.policy.check(new_password)
        normalize(old_password, max_length=self.policy.max_length)  # InvalidRequest first
        if not await self.verify_secret(user, old_password, ctx):
            raise InvalidCredentials()
        await self._store_password(ctx, user.id, new)
        await self._after_password_change(ctx, user.id, keep_session=session.id)
        await ctx.emit("change_password_success", user=user, session_id=session.id)

    async def _after_password_change(
        self, ctx: ServiceContext, user_id: str, *, keep_session: str | None = None
    ) -> None:
        await ctx.one_time.revoke(user_id, ["reset", "enroll"])
        await ctx.revoke_sessions(user_id, except_=[keep_session] if keep_session else [])

    # -- emails -----------------------------------------------------------------------------

    async def add_email(self, ctx: ServiceContext, user_id: str, address: str) -> None:
        """Raises:
        InvalidEmail, EmailAlreadyExists, UserNotFound.
        """
        email = validate_email(address)
        if not await ctx.store.add_email(user_id, Email(email), now=ctx.clock()):
            raise UserNotFound()
        await ctx.emit("email_added", user=await ctx.store.find_user_by_id(user_id))

    async def remove_email(self, ctx: ServiceContext, user_id: str, address: str) -> None:
        """Raises:
        UserNotFound; CannotRemoveLastEmail when it is the user's only way to log in.
        """
        user = await ctx.store.find_user_by_id(user_id)
        if user is None:
            raise UserNotFound()
        others = [e for e in user.emails if canonical_email(e.address) != canonical_email(address)]
        if user.username is None and not others:
            raise CannotRemoveLastEmail()
        if await ctx.store.remove_email(user_id, address, now=ctx.clock()):
            await ctx.emit("email_removed", user=await ctx.store.find_user_by_id(user_id))

    async def verify_email(self, ctx: ServiceContext, token: object) -> None:
        """Raises:
        InvalidToken, VerifyEmailLinkExpired.
        """
        user_id, record = await ctx.one_time.redeem_for_user(
            token, ["verify"], expired=VerifyEmailLinkExpired
        )
        if record.email is None or not await ctx.store.set_email_verified(
            user_id, record.email, now=ctx.clock()
        ):
            raise InvalidToken(reason="address")  # the address was removed since
        await ctx.emit("email_verified", user=await ctx.store.find_user_by_id(user_id))

    # -- links by mail ----------------------------------------------------------------------

    async def send_verification_email(self, ctx: ServiceContext, address: str) -> None:
        """Mail a verification link if `address` belongs to a user and is unverified; silently
        nothing otherwise, or past 3 mails an hour for the address.

        Raises:
            MailUnavailable: the mail could not be sent (the link was not kept).
        """
        user = await ctx.store.find_user_by_email(address)
        email = self._email_of(user, address)
        if user is None or email is None or email.verified:
            return
        await self._send_link(ctx, "verify", user.id, email.address, VERIFY_LIFETIME)

    async def send_reset_password_email(self, ctx: ServiceContext, address: str) -> None:
        """Mail a reset link if `address` belongs to a user; silently nothing otherwise.

        Raises:
            MailUnavailable: the mail could not be sent (the link was not kept).
        """
        user = await ctx.store.find_user_by_email(address)
        email = self._email_of(user, address)
        if user is None or email is None:
            return
        await self._send_link(ctx, "reset", user.id, email.address, RESET_LIFETIME)

    async def send_enrollment_email(
        self, ctx: ServiceContext, user_id: str, address: str | None = None
    ) -> None:
        """Admin: mail a 7-day link to set a first password; following it verifies the address.

        Raises:
            UserNotFound, InvalidRequest (no such address), MailUnavailable.
        """
        user = await ctx.store.find_user_by_id(user_id)
        if user is None:
            raise UserNotFound()
        email = self._email_of(user, address) if address else (user.emails or (None,))[0]
        if email is None:
            raise InvalidRequest("the user has no such email address")
        await self._send_link(ctx, "enroll", user.id, email.address, ENROLL_LIFETIME)

    @staticmethod
    def _email_of(user: User | None, address: str | None) -> Email | None:
        if user is None or address is None:
            return None
        key = canonical_email(address)
        return next((e for e in user.emails if canonical_email(e.address) == key), None)

    async def _send_link(
        self,
        ctx: ServiceContext,
        kind: str,
        user_id: str,
        address: str,
        lifetime: timedelta,
        *,
        template: str | None = None,
    ) -> None:
        await ctx.mail_link(
            self.mailer,
            kind=kind,
            user_id=user_id,
            address=address,
            lifetime=lifetime,
            message=lambda token: self.mail.message(template or kind, address, token),
        )

    async def _tell_owner(self, ctx: ServiceContext, address: str) -> None:
        """Someone registered with a taken address: its owner hears of it, with a reset link."""
        user = await ctx.store.find_user_by_email(address)
        email = self._email_of(user, address)
        if user is not None and email is not None:
            await self._send_link(
                ctx, "reset", user.id, email.address, RESET_LIFETIME, template="exists"
            )

    async def reset_password(
        self, ctx: ServiceContext, token: object, new_password: object
    ) -> None:
        """Set a new password with a reset or enrollment link; the address it was sent to
        becomes verified, and every session and other link of the user ends.

        Raises:
            InvalidPassword (the link stays valid), InvalidToken, ResetPasswordLinkExpired.
        """
        password = self.policy.check(new_password)
        # Hash before spending the link: if hashing is refused (Overloaded), the link survives.
        encoded = await self.hasher.hash(password)
        user_id, record = await ctx.one_time.redeem_for_user(
            token, ["reset", "enroll"], expired=ResetPasswordLinkExpired
        )
        data = {_ARGON2: encoded}
        if not await ctx.store.set_service_data(user_id, self.name, data, now=ctx.clock()):
            raise InvalidToken(reason="user")
        await self._after_password_change(ctx, user_id)
        if record.email is not None:
            await ctx.store.set_email_verified(user_id, record.email, now=ctx.clock())
        await ctx.emit("reset_password_success", user=await ctx.store.find_user_by_id(user_id))

    # -- routes -----------------------------------------------------------------------------

    async def _register(self, request: EndpointRequest, ctx: ServiceContext) -> dict[str, str]:
        """`{user: {username?, email?, password}}` → `{userId}`."""
        await ctx.limiter.hit("register-ip", request.info.ip, ctx.limiter.limits.register_per_ip)
        fields = request.body.get("user")
        if not isinstance(fields, Mapping):
            raise InvalidRequest("user must be an object")
        unknown = set(fields) - {"username", "email", "password"}
        if unknown:
            raise InvalidRequest(f"unknown user fields: {sorted(unknown)}")
        password = fields.get("password")
        if not isinstance(password, str):
            raise InvalidRequest("password must be a string")
        email = fields.get("email")
        try:
            user = await self.create_user(
                ctx, password=password, username=fields.get("username"), email=email
            )
        except EmailAlreadyExists:
            if not self.ambiguous_registration:
                raise
            ctx.after_response(self._tell_owner(ctx, validate_email(email)))
            return {}
        if self.ambiguous_registration and email is not None:
            ctx.after_response(self.send_verification_email(ctx, validate_email(email)))
            return {}
        return {"userId": user.id}

    def _requested_address(self, request: EndpointRequest) -> str:
        if self.mailer is None:
            raise MailUnavailable("no mail transport is configured")
        return validate_email(request.body.get("email"))

    async def _send_verification_email(self, request: EndpointRequest, ctx: ServiceContext) -> None:
        """`{email}` → `null`, whatever the address."""
        address = self._requested_address(request)
        ctx.after_response(self.send_verification_email(ctx, address))

    async def _send_reset_password_email(
        self, request: EndpointRequest, ctx: ServiceContext
    ) -> None:
        """`{email}` → `null`, whatever the address."""
        address = self._requested_address(request)
        ctx.after_response(self.send_reset_password_email(ctx, address))

    @staticmethod
    async def _token_submission(request: EndpointRequest, ctx: ServiceContext) -> None:
        await ctx.limiter.hit("token-ip", request.info.ip, ctx.limiter.limits.token_per_ip)

    async def _verify_email(self, request: EndpointRequest, ctx: ServiceContext) -> None:
        """`{token}` → `null`."""
        await self._token_submission(request, ctx)
        await self.verify_email(ctx, request.body.get("token"))

    async def _reset_password(self, request: EndpointRequest, ctx: ServiceContext) -> None:
        """`{token, newPassword}` → `null`."""
        await self._token_submission(request, ctx)
        body = request.body
        await self.reset_password(ctx, body.get("token"), body.get("newPassword"))

    async def _add_email(self, request: EndpointRequest, ctx: ServiceContext) -> None:
        """`{newEmail}` with an access token → `null`."""
        user, _ = await ctx.authenticated(request.access_token)
        address = validate_email(request.body.get("newEmail"))
        await self.add_email(ctx, user.id, address)

    async def _two_factor_secret(
        self, request: EndpointRequest, ctx: ServiceContext
    ) -> dict[str, object]:
        """`{}` (a token optional: the accounts-js client sends none) → `{secret}`."""
        await self._token_submission(request, ctx)
        account = None
        if request.access_token is not None:
            user, _ = await ctx.authenticated(request.access_token)
            account = user.username or (user.emails[0].address if user.emails else None)
        secret = await ctx.two_factor.new_secret(account)
        return {
            "secret": {
                "ascii": secret.ascii,
                "hex": secret.hex,
                "base32": secret.base32,
                "otpauth_url": secret.otpauth_url,
            }
        }

    async def _two_factor_set(
        self, request: EndpointRequest, ctx: ServiceContext
    ) -> dict[str, object]:
        """`{secret, code}` with an access token → `{recoveryCodes}`."""
        user, session = await ctx.authenticated(request.access_token)
        if session.impersonator_id is not None:  # the user's own second factor
            raise NotWhileImpersonating(
                "Two-factor authentication cannot be changed from an impersonation session"
            )
        body = request.body
        codes = await ctx.two_factor.enable(
            user, body.get("secret"), body.get("code"), session_id=session.id
        )
        self._notify(ctx, user, "two_factor_enabled")
        return {"recoveryCodes": codes}

    async def _two_factor_unset(
        self, request: EndpointRequest, ctx: ServiceContext
    ) -> dict[str, object]:
        """`{code}` with an access token → `{}`."""
        user, session = await ctx.authenticated(request.access_token)
        if session.impersonator_id is not None:  # the user's own second factor
            raise NotWhileImpersonating(
                "Two-factor authentication cannot be changed from an impersonation session"
            )
        await ctx.two_factor.disable(user, request.body.get("code"), session_id=session.id)
        self._notify(ctx, user, "two_factor_disabled")
        return {}

    async def _two_factor_recovery_codes(
        self, request: EndpointRequest, ctx: ServiceContext
    ) -> dict[str, object]:
        """`{code}` with an access token → `{recoveryCodes}`."""
        user, session = await ctx.authenticated(request.access_token)
        if session.impersonator_id is not None:  # the user's own second factor
            raise NotWhileImpersonating(
                "Two-factor authentication cannot be changed from an impersonation session"
            )
        codes = await ctx.two_factor.regenerate_recovery_codes(
            user, request.body.get("code"), session_id=session.id
        )
        return {"recoveryCodes": codes}

    async def _two_factor_status(
        self, request: EndpointRequest, ctx: ServiceContext
    ) -> dict[str, object]:
        user, _ = await ctx.authenticated(request.access_token)
        status = await ctx.two_factor.status(user.id)
        enabled_at = status.enabled_at
        return {
            "enabled": status.enabled,
            "recoveryCodesLeft": status.recovery_codes_left,
            "enabledAt": None if enabled_at is None else enabled_at.isoformat(),
        }

    def _notify(self, ctx: ServiceContext, user: User, kind: str) -> None:
        """Tell the user's verified addresses (or, with none verified, the first) of a
        security change, after answering; a mail that fails is logged, the change stands."""
        if self.mailer is None or not user.emails:
            return
        mailer = self.mailer
        addresses = [e.address for e in user.emails if e.verified] or [user.emails[0].address]

        async def send() -> None:
            for address in addresses:
                await mailer.send(self.mail.notice(kind, address))

        ctx.after_response(send())

    async def _change_password(self, request: EndpointRequest, ctx: ServiceContext) -> None:
        """`{oldPassword, newPassword}` with an access token → `null`."""
        body = request.body
        await self.change_password(
            ctx, request.access_token, body.get("oldPassword"), body.get("newPassword")
        )


_STRING = {"type": "string"}
_NULL = {"type": "null"}
_SECRET = {
    "type": "object",
    "properties": dict.fromkeys(("ascii", "hex", "base32", "otpauth_url"), _STRING),
}
_CODES = {"type": "object", "properties": {"recoveryCodes": {"type": "array", "items": _STRING}}}
_STATUS = {
    "type": "object",
    "properties": {
        "enabled": {"type": "boolean"},
        "recoveryCodesLeft": {"type": "integer"},
        "enabledAt": {"type": ["string", "null"]},
    },
}


def _account_key(user_id: str) -> str:
    """The failed-login counter of an account, whatever identifier it was reached by."""
    return f"account:{user_id}"


def _object(**properties: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def from_settings(settings: ServiceSettings) -> PasswordService:
    """The service as `accounts-server serve` builds it: the server's mail transport and site
    URL, and from `[services.password]`: `min_length`, `max_length`, `ambiguous_registration`.

    Raises:
        ConfigurationError: an unknown or bad setting.
    """
    settings.check_known("min_length", "max_length", "ambiguous_registration")
    defaults = {f.name: f.default for f in fields(PasswordPolicy)}
    policy = PasswordPolicy(
        min_length=settings.integer("min_length", cast("int", defaults["min_length"])),
        max_length=settings.integer("max_length", cast("int", defaults["max_length"])),
    )
    return PasswordService(
        mailer=settings.mailer,
        mail=MailSettings(
            site_url=settings.site_url,
            templates={
                kind: template.overridden(settings.mail_templates, kind)
                for kind, template in _templates().items()
            },
        ),
        policy=policy,
        ambiguous_registration=settings.flag("ambiguous_registration", False),
    )
