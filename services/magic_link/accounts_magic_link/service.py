"""Magic links: `POST /magiclink/requestMagicLinkEmail {email}` mails a one-time link, and
`POST /magicLink/authenticate {token}` logs in with it.

Tokens are 256 bits, stored as SHA-256, valid 15 minutes and single use (an atomic consume).
The request answers `null` at once for any address and mails after the response, so it cannot
enumerate accounts; mails per address are capped by the server's rate limits. Following a link
proves the address, so it becomes verified; a user with a second factor (TOTP, a passkey) is
then asked for it, as after a password. Written only against `accounts_server`'s public API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from accounts_server import (
    Authenticated,
    EndpointRequest,
    InvalidToken,
    Mailer,
    MailTemplate,
    MailUnavailable,
    ServiceContext,
    ServiceEndpoint,
    ServiceSettings,
    User,
    canonical_email,
    validate_email,
)

__all__ = ["MagicLinkExpired", "MagicLinkService", "from_settings"]

KIND = "magic"
LIFETIME = timedelta(minutes=15)
#: Where on the site a link points (the token is appended), as accounts-js has it.
LINK_PATH = "/magic-link/"
TEMPLATE = MailTemplate(
    subject="Your login link",
    text="To log in, open this link:\n\n$url\n\nIt works once and expires in 15 minutes. "
    "If you did not ask for it, ignore this mail.",
    html='<p>To log in, <a href="$url">open this link</a>. It works once, for 15 minutes.</p>',
)


class MagicLinkExpired(InvalidToken):
    code = "MagicLinkExpired"
    default_message = "Login link expired"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, reason="expired")


class MagicLinkService:
    name = "magicLink"

    def __init__(
        self,
        *,
        mailer: Mailer | None = None,
        site_url: str = "http://localhost:3000",
        path: str = LINK_PATH,
        template: MailTemplate = TEMPLATE,
    ) -> None:
        self.mailer = mailer
        self.site_url = site_url.rstrip("/")
        self.path = path
        self.template = template

    def endpoints(self) -> Sequence[ServiceEndpoint]:
        return (
            ServiceEndpoint(
                "/magiclink/requestMagicLinkEmail",
                self._request,
                summary="Mail a login link (the answer is the same for any address)",
                body={"type": "object", "properties": {"email": {"type": "string"}}},
                response={"type": "null"},
            ),
        )

    async def authenticate(
        self, params: Mapping[str, Any], ctx: ServiceContext
    ) -> Authenticated | None:
        """Raises:
        InvalidToken: unknown or used link; MagicLinkExpired.
        """
        user_id, record = await ctx.one_time.redeem_for_user(
            params.get("token"), [KIND], expired=MagicLinkExpired
        )
        user = await ctx.store.find_user_by_id(user_id)
        if user is None or record.email is None:
            raise InvalidToken(reason="user")
        await ctx.store.set_email_verified(user.id, record.email, now=ctx.clock())
        verified = await ctx.store.find_user_by_id(user.id)
        if verified is None:
            raise InvalidToken(reason="user")
        # Holding the mailbox is one factor: a user with a second one gives it too.
        return Authenticated(verified, second_factor=True)

    async def can_log_in(self, user: User, ctx: ServiceContext) -> bool:
        """`LoginAvailability`: any address of the user can receive a link, if mail is set."""
        return self.mailer is not None and bool(user.emails)

    async def request_link(self, ctx: ServiceContext, address: str) -> None:
        """Mail a login link if `address` belongs to a user; silently nothing otherwise.

        Raises:
            MailUnavailable: the mail could not be sent (the link was not kept).
        """
        user = await ctx.store.find_user_by_email(address)
        if user is None:
            return
        key = canonical_email(address)
        email = next(e.address for e in user.emails if canonical_email(e.address) == key)
        await ctx.mail_link(
            self.mailer,
            kind=KIND,
            user_id=user.id,
            address=email,
            lifetime=LIFETIME,
            message=lambda token: self.template.render(
                email, {"url": f"{self.site_url}{self.path}{token}", "token": token}
            ),
        )

    async def _request(self, request: EndpointRequest, ctx: ServiceContext) -> None:
        """`{email}` → `null`, whatever the address."""
        if self.mailer is None:
            raise MailUnavailable("no mail transport is configured")
        address = validate_email(request.body.get("email"))
        ctx.after_response(self.request_link(ctx, address))


def from_settings(settings: ServiceSettings) -> MagicLinkService:
    """As `accounts-server serve` builds it: the server's mail transport and site URL, and
    `path` (where links point on the site) from `[services.magicLink]`.

    Raises:
        ConfigurationError: an unknown or bad setting.
    """
    settings.check_known("path")
    return MagicLinkService(
        mailer=settings.mailer,
        site_url=settings.site_url,
        path=settings.text("path") or LINK_PATH,
        template=TEMPLATE.overridden(settings.mail_templates, "magic_link"),
    )
