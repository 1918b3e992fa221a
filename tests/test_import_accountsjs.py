"""`accounts-server import accounts-js`: users written by the real accounts-js
(@accounts/server + @accounts/password + @accounts/mongo from npm, tests/accountsjs/) into the
MongoDB-wire server, imported by the command line, then logging in to our server over HTTP
with the passwords they had."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from accounts_server import Email
from accounts_server.stores.mongo import MongoStore

from .helpers import PASSWORD, npm_ci
from .http.test_uvicorn import serving

WRITER = Path(__file__).parent / "accountsjs"
CLI = [sys.executable, "-m", "accounts_server.cli"]
PASSWORDS = {
    "alice": "alice-Password-1",
    "bob": "bob-Password-22",
    "carol": "carol-Password-333",
    "dave": "dave-Password-4444",
    "gina": "gina-Password-7777777",
}


@dataclass
class Source:
    url: str
    db: str
    ids: dict[str, str]


@pytest.fixture(scope="module")
def source(mongodb_url: str) -> Source:
    """A database accounts-js wrote, once for the module."""
    npm_ci(WRITER)
    db = f"accountsjs_{uuid.uuid4().hex}"
    written = subprocess.run(
        ["node", "write-users.mjs", mongodb_url, db],
        cwd=WRITER,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert written.returncode == 0, written.stderr[-2000:]
    return Source(mongodb_url, db, json.loads(written.stdout))


def run_import(source: Source, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            *("import", "accounts-js", "--from", source.url, "--from-db", source.db, *args),
            *("--mongodb-url", source.url, "--mongodb-db", target),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def row(output: str, label: str) -> int:
    """The number in the report's row `label`."""
    line = next(line for line in output.splitlines() if f" {label} " in line)
    return int(line.strip(" │|").split("│")[-1].strip())


def test_import_then_log_in_with_the_accountsjs_passwords(source: Source, tmp_path: Path) -> None:
    target = f"imported_{uuid.uuid4().hex}"
    ids = source.ids

    async def existing() -> str:
        store = MongoStore.from_url(source.url, target)
        now = datetime.now(UTC)
        user = await store.create_user(
            username="here", emails=[Email("taken@example.com")], extra={}, services={}, now=now
        )
        await store.close()
        return user.id

    holder = asyncio.run(existing())

    dry = run_import(source, target, "--dry-run")
    assert dry.returncode == 1, dry.stderr  # some users cannot come: said, and in the status
    assert "dry run: nothing written" in dry.stdout
    assert row(dry.stdout, "would be imported") == 4

    first = run_import(source, target)
    assert first.returncode == 1, first.stderr
    report = first.stdout
    assert row(report, "imported") == 4
    assert row(report, "skipped") == 2
    assert row(report, "conflicts") == 1
    assert f"{ids['dave']} │ it has two-factor authentication" in report
    assert f"{ids['eve']} │ its username is one this server refuses" in report
    assert f"{ids['frank']} │ its email #1 is user {holder}'s" in report
    assert "$2a$" not in report + first.stderr  # never a hash

    again = run_import(source, target)
    assert row(again.stdout, "imported") == 0
    assert row(again.stdout, "here already (left alone)") == 4
    assert "nothing changed" in again.stdout

    with serving(tmp_path, "--mongodb-url", source.url, "--mongodb-db", target) as api:
        for name, identifier in (
            ("alice", "alice"),
            ("alice", "ALICE@example.com"),
            ("carol", "carol"),
            ("gina", "gina@example.com"),
        ):
            login = api.post(
                "/password/authenticate", json={"user": identifier, "password": PASSWORDS[name]}
            )
            assert login.status_code == 200, login.text
            user = login.json()["user"]
            assert user["id"] == ids[name]  # the application's references stay true
        assert user["emails"] == [{"address": "gina@example.com", "verified": True}]
        alice = api.post("/password/authenticate", json={"user": "alice", "password": PASSWORD})
        assert alice.json()["code"] == "InvalidCredentials"  # the hash, not any password
        bob = api.post(
            "/password/authenticate", json={"user": "bob@example.com", "password": PASSWORDS["bob"]}
        )
        assert bob.status_code == 403 and bob.json()["code"] == "UserDeactivated"

    async def check() -> None:
        store = MongoStore.from_url(source.url, target)
        alice = await store.find_user_by_id(ids["alice"])
        assert alice is not None and alice.extra == {"profile": {"name": "Alice", "plan": "pro"}}
        assert alice.created_at is not None and alice.created_at.year >= 2025
        # bcrypt verified once, replaced by argon2id at that login.
        data = await store.get_service_data(ids["alice"], "password")
        assert data is not None and "argon2" in data and "bcrypt" not in data
        carol = await store.find_user_by_identity("google", "g-123")
        gina = await store.find_user_by_identity("github", "42")
        assert (carol and carol.id, gina and gina.id) == (ids["carol"], ids["gina"])
        await store.close()

    asyncio.run(check())

    with_dave = run_import(source, target, "--drop-two-factor")
    assert row(with_dave.stdout, "imported") == 1
    assert row(with_dave.stdout, "here already (left alone)") == 4
