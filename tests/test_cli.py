"""The management CLI on a real SQLite file, through click's runner (the same entry point the
`accounts-server` script calls)."""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
from pathlib import Path

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
from accounts_server.cli import main
from accounts_server.stores import SQLiteStore

from .helpers import PASSWORD, load_key


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
