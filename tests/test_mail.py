"""Outgoing mail: templates, the SMTP transport's configuration, and delivery to the real SMTP
server (aiosmtpd) or to nothing at all."""

from __future__ import annotations

import logging
from email.message import Message

import pytest

from accounts_server import ConfigurationError, MailMessage, MailTemplate, MailUnavailable
from accounts_server.mail import SMTPMailer

from .helpers import SMTPServer, free_port

SENDER = "accounts@example.com"
SECRET = "s3cret-Pa55word"


def parts(message: Message) -> dict[str, str]:
    """The decoded text of each leaf part, by content type."""
    found: dict[str, str] = {}
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found[part.get_content_type()] = payload.decode(part.get_content_charset() or "ascii")
    return found


class TestTemplate:
    def test_values_are_escaped_in_the_html_part_only(self) -> None:
        template = MailTemplate(
            subject="Welcome, $name",
            text="Hello $name, open $link",
            html='<p>Hello $name</p><a href="$link">open</a>',
        )
        values = {"name": '<b>Ann & "Co"</b>', "link": "https://app.example/?a=1&b=2"}
        message = template.render("ann@example.com", values)
        assert message == MailMessage(
            to="ann@example.com",
            subject='Welcome, <b>Ann & "Co"</b>',
            text='Hello <b>Ann & "Co"</b>, open https://app.example/?a=1&b=2',
            html="<p>Hello &lt;b&gt;Ann &amp; &quot;Co&quot;&lt;/b&gt;</p>"
            '<a href="https://app.example/?a=1&amp;b=2">open</a>',
        )

    def test_the_template_markup_itself_is_not_escaped(self) -> None:
        html = MailTemplate(subject="s", text="t", html="<p>$x</p>").render("a@x.io", {"x": "y"})
        assert html.html == "<p>y</p>"

    def test_no_html_part_stays_none(self) -> None:
        message = MailTemplate(subject="Hi $name", text="Hi $name").render("a@x.io", {"name": "<"})
        assert (message.subject, message.text, message.html) == ("Hi <", "Hi <", None)

    def test_unknown_placeholders_are_left_and_values_are_not_expanded_again(self) -> None:
        template = MailTemplate(subject="$missing", text="$name $missing", html="$name")
        message = template.render("a@x.io", {"name": "$missing"})
        assert message.subject == "$missing"
        assert message.text == "$missing $missing"
        assert message.html == "$missing"


class TestFromUrl:
    def test_smtp_with_escaped_credentials_defaults_to_port_25(self) -> None:
        mailer = SMTPMailer.from_url(
            "smtp://ann%40corp:p%40ss%3Aw%2Frd@mail.example", sender=SENDER
        )
        assert mailer == SMTPMailer(
            sender=SENDER,
            host="mail.example",
            port=25,
            username="ann@corp",
            password="p@ss:w/rd",
            tls=False,
        )

    def test_smtp_with_a_port_and_no_credentials(self) -> None:
        mailer = SMTPMailer.from_url("smtp://mail.example:587", sender=SENDER)
        assert (mailer.host, mailer.port, mailer.tls) == ("mail.example", 587, False)
        assert (mailer.username, mailer.password) == (None, None)

    def test_smtps_is_implicit_tls_on_465(self) -> None:
        mailer = SMTPMailer.from_url("smtps://u:p@mail.example", sender=SENDER)
        assert (mailer.host, mailer.port, mailer.tls) == ("mail.example", 465, True)
        assert (mailer.username, mailer.password) == ("u", "p")
        assert SMTPMailer.from_url("smtps://mail.example:2465", sender=SENDER).port == 2465

    @pytest.mark.parametrize(
        "url",
        [
            "",
            "mail.example:25",
            "http://mail.example",
            "ftp://mail.example",
            "smtp+tls://mail.example",
            "smtp://",
            "smtp:///path",
            "smtp://user:pass@",
            "smtp://:25",
            "smtp://mail.example:notaport",
            "smtp://mail.example:99999",
            "smtp://[::1",
        ],
    )
    def test_other_urls_are_refused(self, url: str) -> None:
        with pytest.raises(ConfigurationError):
            SMTPMailer.from_url(url, sender=SENDER)

    def test_the_refusal_does_not_repeat_the_url(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            SMTPMailer.from_url(f"http://ann:{SECRET}@mail.example", sender=SENDER)
        assert SECRET not in str(caught.value)

    def test_an_empty_sender_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="sender"):
            SMTPMailer(sender="")
        with pytest.raises(ConfigurationError, match="sender"):
            SMTPMailer.from_url("smtp://mail.example", sender="")


class TestSend:
    async def test_delivers_text_and_html_to_the_smtp_server(self, smtp: SMTPServer) -> None:
        smtp.checkpoint()
        to = "mia@example.com"
        mailer = SMTPMailer(sender=SENDER, port=smtp.port)
        await mailer.send(
            MailMessage(
                to=to,
                subject="Your sign-in link",
                text="Open https://app.example/magic/abc (valid 15 min) \u2713",
                html="<p>Open <a href='https://app.example/magic/abc'>the link</a></p>",
            )
        )
        message = await smtp.wait_for(to)
        assert (message["From"], message["To"]) == (SENDER, to)
        assert message["Subject"] == "Your sign-in link"
        assert message.get_content_type() == "multipart/alternative"
        body = parts(message)
        assert body["text/plain"].strip() == (
            "Open https://app.example/magic/abc (valid 15 min) \u2713"
        )
        assert body["text/html"].strip() == (
            "<p>Open <a href='https://app.example/magic/abc'>the link</a></p>"
        )

    async def test_a_text_only_message_has_no_html_part(self, smtp: SMTPServer) -> None:
        smtp.checkpoint()
        to = "tom@example.com"
        await smtp.mailer().send(MailMessage(to=to, subject="Plain", text="just text"))
        message = await smtp.wait_for(to)
        assert message.get_content_type() == "text/plain"
        assert parts(message) == {"text/plain": "just text\n"}

    async def test_a_rendered_template_arrives_as_rendered(self, smtp: SMTPServer) -> None:
        smtp.checkpoint()
        to = "ida@example.com"
        template = MailTemplate(subject="Hi $name", text="Hi $name", html="<b>Hi $name</b>")
        await smtp.mailer().send(template.render(to, {"name": "<Ida>"}))
        body = parts(await smtp.wait_for(to))
        assert body["text/plain"].strip() == "Hi <Ida>"
        assert body["text/html"].strip() == "<b>Hi &lt;Ida&gt;</b>"

    async def test_a_dead_port_is_mail_unavailable_without_the_password(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        port = free_port()
        mailer = SMTPMailer(sender=SENDER, port=port, username="mailer", password=SECRET, timeout=2)
        with (
            caplog.at_level(logging.WARNING, logger="accounts_server.mail"),
            pytest.raises(MailUnavailable) as caught,
        ):
            await mailer.send(MailMessage(to="nobody@example.com", subject="s", text="t"))
        [record] = [r for r in caplog.records if r.name == "accounts_server.mail"]
        assert record.levelno == logging.WARNING
        assert str(port) in record.getMessage()
        assert SECRET not in caplog.text
        assert SECRET not in str(caught.value)
        assert SECRET not in repr(caught.value.__cause__)

    async def test_a_refused_login_is_mail_unavailable_without_the_password(
        self, smtp: SMTPServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The test server offers no AUTH: the credentials reach the failing code path."""
        mailer = SMTPMailer(
            sender=SENDER, port=smtp.port, username="mailer", password=SECRET, timeout=5
        )
        with (
            caplog.at_level(logging.WARNING, logger="accounts_server.mail"),
            pytest.raises(MailUnavailable),
        ):
            await mailer.send(MailMessage(to="nobody@example.com", subject="s", text="t"))
        assert [r.name for r in caplog.records if r.name == "accounts_server.mail"] == [
            "accounts_server.mail"
        ]
        assert SECRET not in caplog.text
