"""No secret in any log line: a real `serve` at debug level, in both log formats, through every
flow of the HTTP protocol that handles one (passwords, tokens, mailed links, a TOTP secret and
its codes, recovery codes, an mfaToken), with mail sent to a real SMTP server; then every line
it wrote is searched for each of them and for their SHA-256 hashes."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyotp
import pytest

from .helpers import PASSWORD, SMTPServer, free_port, stop_process


@contextmanager
def serve(workdir: Path, smtp: SMTPServer, log_format: str) -> Iterator[tuple[httpx.Client, Path]]:
    """`serve` on a free port with its whole output in a file; stopped by its PID."""
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *[sys.executable, "-m", "accounts_server.cli", "serve", "--port", str(port)],
                *["--log-level", "debug", "--log-format", log_format],
                *["--smtp-url", f"smtp://127.0.0.1:{smtp.port}", "--mail-from", "a@example.com"],
                "--reuse-grace=0",
            ],
            cwd=workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/accounts"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            with suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "serve did not answer within 30 s"
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=20) as client:
            yield client, log
    finally:
        stop_process(process)


def wait_for_mail(smtp: SMTPServer, to: str, count: int) -> Message:
    deadline = time.monotonic() + 20
    while len(found := smtp.messages(to)) < count:
        assert time.monotonic() < deadline, f"no mail {count} to {to}"
        time.sleep(0.05)
    return found[count - 1]


def link_token(message: Message) -> str | None:
    body = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    text = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
    found = re.search(r"https?://\S+/(?:verify-email|reset-password|magic-link)/(\S+)", text)
    return found.group(1) if found else None


class Flows:
    """Drives the flows and remembers every secret it saw."""

    def __init__(self, api: httpx.Client, smtp: SMTPServer, email: str) -> None:
        self.api, self.smtp, self.email = api, smtp, email
        self.secrets: set[str] = set()
        self.mails = 0

    def keep(self, *values: object) -> None:
        self.secrets.update(str(v) for v in values if v)

    def post(
        self, path: str, body: Any = None, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer: httpx.Response = self.api.post(
            path, json=body if body is not None else {}, headers=headers, **kw
        )
        return answer

    def login(self, password: str, **extra: Any) -> httpx.Response:
        return self.post(
            "/password/authenticate", {"user": {"email": self.email}, "password": password, **extra}
        )

    def tokens(self, answer: httpx.Response) -> tuple[str, str]:
        assert answer.status_code == 200, answer.text
        pair = answer.json()["tokens"]
        self.keep(pair["accessToken"], pair["refreshToken"])
        return pair["accessToken"], pair["refreshToken"]

    def mailed_token(self) -> str:
        """The link in the next mail that has one (notices of security changes have none)."""
        while True:
            self.mails += 1
            token = link_token(wait_for_mail(self.smtp, self.email, self.mails))
            if token is not None:
                self.keep(token)
                return token

    def run(self) -> None:
        first, second, third = PASSWORD, PASSWORD + " two", PASSWORD + " three"
        self.keep(first, second, third, "wrong horse battery staple")
        user = {"username": "lena", "email": self.email, "password": first}
        assert self.post("/password/register", {"user": user}).status_code == 200
        assert (
            self.post("/password/sendVerificationEmail", {"email": self.email}).status_code == 200
        )
        assert self.post("/password/verifyEmail", {"token": self.mailed_token()}).status_code == 200
        assert self.login("wrong horse battery staple").status_code == 401
        access, refresh = self.tokens(self.login(first))
        assert self.api.get("/user", headers={"Authorization": f"Bearer {access}"}).json()
        self.tokens(self.post("/refreshTokens", {"accessToken": access, "refreshToken": refresh}))
        reused = self.post("/refreshTokens", {"refreshToken": refresh})
        assert reused.json()["code"] == "TokenReused"

        assert (
            self.post("/password/sendResetPasswordEmail", {"email": self.email}).status_code == 200
        )
        reset = {"token": self.mailed_token(), "newPassword": second}
        assert self.post("/password/resetPassword", reset).status_code == 200
        access, _ = self.tokens(self.login(second))
        change = {"oldPassword": second, "newPassword": third}
        assert self.post("/password/changePassword", change, access).status_code == 200

        assert (
            self.post("/magiclink/requestMagicLinkEmail", {"email": self.email}).status_code == 200
        )
        access, _ = self.tokens(
            self.post("/magicLink/authenticate", {"token": self.mailed_token()})
        )
        access, _ = self.tokens(self.login(third))
        secret = self.post("/password/twoFactorSecret", token=access).json()["secret"]
        code = pyotp.TOTP(secret["base32"]).now()
        self.keep(secret["base32"], secret.get("otpauth_url"), code)
        enabled = self.post("/password/twoFactorSet", {"secret": secret, "code": code}, access)
        assert enabled.status_code == 200, enabled.text
        recovery = enabled.json()["recoveryCodes"]
        self.keep(*recovery)
        wanted = self.login(third)
        assert wanted.status_code == 401 and wanted.json()["code"] == "TwoFactorCodeRequired"
        mfa_token = wanted.json()["mfaToken"]
        self.keep(mfa_token)
        finish = self.post("/mfa/authenticate", {"mfaToken": mfa_token, "code": recovery[0]})
        access, _ = self.tokens(finish)

        assert (
            self.api.get("/sessions", headers={"Authorization": f"Bearer {access}"}).status_code
            == 200
        )
        denied = self.post(
            "/impersonate", {"accessToken": access, "impersonated": {"username": "x"}}
        )
        assert denied.status_code in (200, 403)
        assert self.post("/logout", token=access).status_code == 200
        # A request with a forged token and one with a body too deep: error paths log too.
        self.post("/logout", token=access + "x")
        self.api.post(
            "/password/authenticate",
            content=b"[" * 100,
            headers={"content-type": "application/json"},
        )

    def forms(self) -> set[str]:
        """Each secret, and the SHA-256 of it as the stores keep hashes (hex, base64url)."""
        found = set(self.secrets)
        for value in self.secrets:
            digest = hashlib.sha256(value.encode()).digest()
            found.add(digest.hex())
            found.add(base64.urlsafe_b64encode(digest).rstrip(b"=").decode())
        return found


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_any_log_line(tmp_path: Path, smtp: SMTPServer, log_format: str) -> None:
    smtp.checkpoint()
    email = f"lena-{log_format}@example.com"
    with serve(tmp_path, smtp, log_format) as (api, log):
        flows = Flows(api, smtp, email)
        flows.run()
    lines = log.read_text().splitlines()
    assert any("accounts_server.access" in line or "POST /accounts" in line for line in lines)
    for secret in flows.forms():
        leaked = [line for line in lines if secret in line]
        assert not leaked, f"a secret ({len(secret)} characters) is in the log: {leaked[0]}"
    if log_format == "json":
        for line in lines:
            assert isinstance(orjson.loads(line), dict), line
