"""The management CLI on a real SQLite file, through click's runner (the same entry point the
`accounts-server` script calls)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest
from click.testing import CliRunner

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    ConnectionInfo,
    InvalidToken,
    KeyRing,
    SealingKeys,
    TokenConfig,
    TwoFactorCodeRequired,
)
from accounts_server import cli as cli_module
from accounts_server.cli import main
from accounts_server.stores import SQLiteStore

from .helpers import PASSWORD, free_port, load_key, stop_process


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.db"
    asyncio.run(SQLiteStore(path).close())
    return path


#: Wide enough that rich tables do not wrap ids.
WIDE = {"COLUMNS": "220"}


def cli(db: Path, *args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(main, [*args, "--db", str(db)], input=input, env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def login(db: Path, username: str) -> tuple[str, str]:
    """A real login on the same file, as the running server would do it."""

    async def go() -> tuple[str, str]:
        store = SQLiteStore(db)
        server = AccountsServer(
            store=store,
            tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
            services=[PasswordService()],
        )
        params = {"user": username, "password": PASSWORD}
        result = await server.login_with_service("password", params, ConnectionInfo(ip="192.0.2.1"))
        await store.close()
        return result.session_id, result.tokens.access_token

    return asyncio.run(go())


def resumes(db: Path, token: str) -> bool:
    async def go() -> bool:
        store = SQLiteStore(db)
        server = AccountsServer(
            store=store, tokens=TokenConfig(keys=KeyRing([load_key("ed25519")]))
        )
        try:
            await server.resume_session(token)
            return True
        except InvalidToken:
            return False
        finally:
            await store.close()

    return asyncio.run(go())


def test_users_lifecycle(db: Path) -> None:
    created = cli(
        db,
        "users",
        "create",
        "--username",
        "ann",
        "--email",
        "ann@example.com",
        "--password",
        PASSWORD,
    )
    user_id = created.split()[-1]
    cli(db, "users", "create", "--username", "bob", "--password", PASSWORD)
    listing = cli(db, "users", "list")
    assert "ann" in listing and "bob" in listing and "ann@example.com (unverified)" in listing
    assert "bob" not in cli(db, "users", "list", "--search", "an")
    assert user_id in cli(db, "users", "show", "ann@example.com")

    assert f"deactivated {user_id}" in cli(db, "users", "deactivate", "ann")
    assert "deactivated" in cli(db, "users", "show", user_id)
    assert f"activated {user_id}" in cli(db, "users", "activate", "ann")
    assert f"deleted {user_id}" in cli(db, "users", "delete", "ann", "--yes")
    missing = CliRunner().invoke(main, ["users", "show", "ann", "--db", str(db)])
    assert missing.exit_code == 1 and "UserNotFound" in missing.output


def test_sessions_list_and_revoke(db: Path) -> None:
    cli(db, "users", "create", "--username", "cy", "--password", PASSWORD)
    (first, first_token), (second, second_token) = login(db, "cy"), login(db, "cy")
    listing = cli(db, "sessions", "list", "cy")
    assert first in listing and second in listing and "192.0.2.1" in listing
    assert "revoked 1" in cli(db, "sessions", "revoke", "cy", first)
    assert not resumes(db, first_token) and resumes(db, second_token)
    assert "revoked 1" in cli(db, "sessions", "revoke", "cy", "--all")
    assert not resumes(db, second_token)
    refused = CliRunner().invoke(main, ["sessions", "revoke", "cy", "--db", str(db)])
    assert refused.exit_code == 2
    # Only expired records go; a rate counter's window may just have ended, so no exact count.
    assert re.search(r"pruned \d+ expired record", cli(db, "sessions", "prune"))


def test_keys_list_and_rotate(tmp_path: Path) -> None:
    runner = CliRunner()
    current, new = tmp_path / "accounts.key", tmp_path / "next.key"
    assert runner.invoke(main, ["keys", "generate", str(current)]).exit_code == 0
    listed = runner.invoke(main, ["keys", "list", str(current)], env=WIDE)
    assert listed.exit_code == 0 and "EdDSA" in listed.output
    rotated = runner.invoke(main, ["keys", "rotate", str(new), "--current", str(current)])
    assert rotated.exit_code == 0
    assert f"--key {new} --key {current}" in rotated.output
    assert new.stat().st_mode & 0o777 == 0o600


def test_management_refuses_a_missing_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["users", "list", "--db", str(tmp_path / "nope.db")])
    assert result.exit_code == 1 and "no database" in result.output
    assert not (tmp_path / "nope.db").exists()


def test_admin_commands_are_audited_like_the_admin_routes(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The console's changes emit the same `admin_action` as the HTTP admin surface, with the
    operator at the console as actor, logged on `accounts_server.audit`."""
    user_id = cli(db, "users", "create", "--username", "dee", "--password", PASSWORD).split()[-1]
    session_id, _ = login(db, "dee")
    with caplog.at_level(logging.INFO, logger="accounts_server.audit"):
        cli(db, "users", "deactivate", "dee")
        cli(db, "users", "activate", "dee")
        login(db, "dee")
        cli(db, "sessions", "revoke", "dee", "--all")
        cli(db, "users", "delete", "dee", "--yes")
        cli(db, "users", "list")  # reading is not an action on a user
    lines = [r.getMessage() for r in caplog.records if r.name == "accounts_server.audit"]
    operator = f"console:{getpass.getuser()}"
    assert lines == [
        f"admin_action operator={operator} action={action} user={user_id}"
        for action in ("users.deactivate", "users.activate", "sessions.revoke", "users.delete")
    ]
    assert session_id not in " ".join(lines)


def test_users_create_needs_a_service_that_takes_a_password(db: Path) -> None:
    refused = CliRunner().invoke(
        main,
        ["users", "create", "--username", "eve", "--password", PASSWORD, "--service", "nope"],
        env={**WIDE, "ACCOUNTS_DB": str(db)},
    )
    assert refused.exit_code == 1 and "takes a password" in refused.output
    weak = CliRunner().invoke(
        main, ["users", "create", "--username", "eve", "--password", "short", "--db", str(db)]
    )
    assert weak.exit_code == 1 and "InvalidPassword" in weak.output
    assert "eve" not in cli(db, "users", "list")  # nothing half-written


def test_reset_2fa_lets_a_locked_out_user_in_with_the_password(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The user lost the authenticator and the recovery codes; an operator who has checked
    who is asking removes the second factor (no sealing key needed to remove one), audited."""
    user_id = cli(db, "users", "create", "--username", "fay", "--password", PASSWORD).split()[-1]

    async def enable() -> None:
        store = SQLiteStore(db)
        server = AccountsServer(
            store=store,
            tokens=TokenConfig(keys=KeyRing([load_key("ed25519")])),
            sealing=SealingKeys.generate(),
        )
        user = await server.find_user_by_id(user_id)
        assert user is not None
        secret = await server.two_factor.new_secret()
        code = pyotp.TOTP(secret.base32).now()
        await server.two_factor.enable(user, {"base32": secret.base32}, code)
        await store.close()

    asyncio.run(enable())
    with pytest.raises(TwoFactorCodeRequired):
        login(db, "fay")
    with caplog.at_level(logging.INFO, logger="accounts_server.audit"):
        assert f"two-factor removed for {user_id}" in cli(db, "users", "reset-2fa", "fay")
    login(db, "fay")
    assert "had no two-factor" in cli(db, "users", "reset-2fa", "fay")
    lines = [r.getMessage() for r in caplog.records if r.name == "accounts_server.audit"]
    line = f"admin_action operator=console:{getpass.getuser()} action=users.reset_two_factor"
    assert lines == [f"{line} user={user_id}"] * 2  # the no-op too: it was asked for


WEBAUTHN_VARIABLES = (
    "ACCOUNTS_WEBAUTHN_RP_ID",
    "ACCOUNTS_WEBAUTHN_RP_NAME",
    "ACCOUNTS_WEBAUTHN_ORIGINS",
)


@pytest.fixture
def in_process_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` through the runner, in this process: no passkey variable set before, and the
    ones `serve` exports to the services removed after (monkeypatch restores every variable
    it has touched). uvicorn never starts: a configuration wrongly accepted fails the test
    instead of serving forever."""
    for name in WEBAUTHN_VARIABLES:
        monkeypatch.setenv(name, "")  # recorded as unset, so removed again at the end
        monkeypatch.delenv(name)

    def run(config: object) -> None:
        pytest.fail("serve accepted the configuration and started uvicorn")

    monkeypatch.setattr(cli_module, "_run_until_stopped", run)


def refused(db: Path, *args: str, exit_code: int = 1) -> str:
    """What `serve` says when it refuses to start: click's one "Error: ..." line."""
    result = CliRunner().invoke(main, ["serve", "--db", str(db), *args], env=WIDE)
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.usefixtures("in_process_serve")
def test_serve_refuses_an_rp_id_that_is_not_a_suffix_of_the_origin(db: Path) -> None:
    output = refused(
        db, "--webauthn-rp-id", "example.com", "--webauthn-origin", "https://evil.test"
    )
    assert output.startswith(
        "Error: rp_id 'example.com' is not a registrable suffix of origin 'https://evil.test'"
    ), output


@pytest.mark.usefixtures("in_process_serve")
def test_serve_reads_the_passkey_options_from_the_environment(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variables the service reads itself, origins separated by commas or spaces; an
    option overrides its variable."""
    monkeypatch.setenv("ACCOUNTS_WEBAUTHN_RP_ID", "example.com")
    monkeypatch.setenv("ACCOUNTS_WEBAUTHN_ORIGINS", "https://app.example.com,https://evil.test")
    suffix = "is not a registrable suffix of origin"
    assert f"Error: rp_id 'example.com' {suffix} 'https://evil.test'" in refused(db)
    monkeypatch.setenv("ACCOUNTS_WEBAUTHN_ORIGINS", "https://app.example.com https://b.test")
    assert f"Error: rp_id 'example.com' {suffix} 'https://b.test'" in refused(db)
    overridden = refused(db, "--webauthn-rp-id", "app.example.com")
    assert f"Error: rp_id 'app.example.com' {suffix} 'https://b.test'" in overridden
    empty = refused(db, "--webauthn-origin", " , ", exit_code=2)
    assert "Invalid value for '--webauthn-origin'" in empty


@pytest.fixture
def passkey_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`accounts-server serve` in its own process on a free port, configured for passkeys on
    http://localhost:PORT by its options alone (the caller's passkey variables left out), up
    once /accounts/health answers 200 (within 20 s); stopped by its PID however the test ends.
    Yields the process and its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            *[sys.executable, "-m", "accounts_server.cli", "serve"],
            *["--port", str(port), "--log-level", "warning"],
            *["--webauthn-rp-id", "localhost", "--webauthn-origin", f"http://localhost:{port}"],
            *["--webauthn-rp-name", "Test RP"],
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in WEBAUTHN_VARIABLES},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited early:\n{output(process)}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/accounts/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("serve did not answer /accounts/health within 20 s")
            time.sleep(0.1)
        yield process, base
    finally:
        stop_process(process)
        if process.stdout:
            process.stdout.close()


def output(process: subprocess.Popen[bytes]) -> str:
    return process.stdout.read().decode() if process.stdout else ""


def test_serve_with_passkey_options_serves_them(
    passkey_server: tuple[subprocess.Popen[bytes], str],
) -> None:
    """The options reach the service: its login options name the RP ID, and the registration
    options of a signed-in user the RP name (the service's default is accounts-server)."""
    process, base = passkey_server
    answer = httpx.post(f"{base}/accounts/webauthn/login/options", json={}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rpId"] == "localhost"
    assert answer.json()["userVerification"] == "required"
    with httpx.Client(base_url=f"{base}/accounts", timeout=10) as api:
        user = {"username": "gus", "email": "gus@example.com", "password": PASSWORD}
        assert api.post("/password/register", json={"user": user}).status_code == 200
        login = api.post("/password/authenticate", json={"user": "gus", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
        options = api.post("/webauthn/register/options", json={}, headers=auth)
    assert options.status_code == 200, options.text
    assert options.json()["rp"] == {"id": "localhost", "name": "Test RP"}
    stop_process(process)
    startup = output(process)
    assert re.search(r"accounts-server on http://\S+/accounts .*services: .*webauthn", startup), (
        startup
    )
