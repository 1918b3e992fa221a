"""Outgoing mail: the message, the transport protocol, the SMTP transport and templates.

Login services that mail links (password reset and verification, magic links) share these, so a
deployment configures one transport. aiosmtplib is imported only when a message is sent.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from string import Template
from typing import Protocol
from urllib.parse import unquote, urlsplit

from .errors import ConfigurationError, MailUnavailable

__all__ = ["LogMailer", "MailMessage", "MailTemplate", "Mailer", "SMTPMailer"]

logger = logging.getLogger("accounts_server.mail")
_LINK = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True, slots=True)
class MailMessage:
    to: str
    subject: str
    text: str
    html: str | None = None


class Mailer(Protocol):
    async def send(self, message: MailMessage) -> None:
        """Hand the message to the mail system.

        Raises:
            MailUnavailable: it could not be handed over.
        """
        ...


@dataclass(frozen=True, slots=True)
class MailTemplate:
    """Subject, text and HTML with `$name` placeholders (`string.Template`); values are
    HTML-escaped in the HTML part, so a user-chosen name cannot inject markup."""

    subject: str
    text: str
    html: str | None = None

    def overridden(self, directory: Path | None, kind: str) -> MailTemplate:
        """This template with the parts an operator wrote in `directory` instead:
        `<kind>.subject` (its first line), `<kind>.txt`, `<kind>.html`, each with the same
        `$url`, `$token`, `$email` placeholders; a part without a file stays as it is.

        Raises:
            ConfigurationError: a file that cannot be read as UTF-8.
        """
        if directory is None:
            return self
        parts = {}
        for suffix in ("subject", "txt", "html"):
            path = directory / f"{kind}.{suffix}"
            try:
                parts[suffix] = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(f"mail template {path}: {exc}") from None
        subject = (
            parts["subject"].strip().splitlines()[0]
            if parts.get("subject", "").strip()
            else self.subject
        )
        return MailTemplate(
            subject=subject, text=parts.get("txt", self.text), html=parts.get("html", self.html)
        )

    def render(self, to: str, values: Mapping[str, str]) -> MailMessage:
        escaped = {key: html.escape(value) for key, value in values.items()}
        return MailMessage(
            to=to,
            subject=Template(self.subject).safe_substitute(values),
            text=Template(self.text).safe_substitute(values),
            html=None if self.html is None else Template(self.html).safe_substitute(escaped),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SMTPMailer:
    """SMTP through aiosmtplib. `tls` is implicit TLS (port 465); otherwise STARTTLS is used
    whenever the server offers it, and required when `starttls=True`.

    Raises:
        ConfigurationError: no sender.
    """

    sender: str
    host: str = "127.0.0.1"
    port: int = 25
    username: str | None = None
    password: str | None = None
    tls: bool = False
    starttls: bool | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.sender:
            raise ConfigurationError("SMTPMailer needs a sender address")

    @classmethod
    def from_url(cls, url: str, *, sender: str) -> SMTPMailer:
        """`smtp://user:pass@host:587` (STARTTLS when offered) or `smtps://host:465` (TLS).

        Raises:
            ConfigurationError: not an smtp:// or smtps:// URL.
        """
        refused = ConfigurationError("the SMTP URL must look like smtp://user:pass@host:port")
        try:
            parts = urlsplit(url)
            port = parts.port  # a port that is not a number (or out of range) is a ValueError
        except ValueError:
            raise refused from None
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise refused
        tls = parts.scheme == "smtps"
        return cls(
            sender=sender,
            host=parts.hostname,
            port=port or (465 if tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    async def send(self, message: MailMessage) -> None:
        import aiosmtplib

        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        email.set_content(message.text)
        if message.html is not None:
            email.add_alternative(message.html, subtype="html")
        try:
            await aiosmtplib.send(
                email,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.tls,
                start_tls=self.starttls,
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            logger.warning("mail to the SMTP server at %s:%s failed: %s", self.host, self.port, exc)
            raise MailUnavailable() from exc


@dataclass(frozen=True, slots=True)
class LogMailer:
    """Development without SMTP: each mail is logged at WARNING (recipient, subject and the
    links in it) instead of sent, as accounts-js prints mails it has no transport for.

    The links are live credentials (a reset link resets the password), so this is for a
    developer's machine; `accounts-server serve` says at startup that mail is logged, and
    production sets an SMTP URL.
    """

    logger: logging.Logger = logger

    async def send(self, message: MailMessage) -> None:
        links = " ".join(_LINK.findall(message.text)) or "(no link)"
        self.logger.warning("mail to %s: %s: %s", message.to, message.subject, links)
