"""`accounts-server serve` on PostgreSQL under uvicorn, and the management commands on the
same database: what an operator runs, end to end (the URL by reference, from the config file)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from accounts_server.cli import main

from ..helpers import PASSWORD
from ..http.test_uvicorn import started, workers_share_one_database


def test_serve_and_manage_on_postgres(
    tmp_path: Path, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text('postgres_url = { env = "TEST_PG_URL" }\n')
    monkeypatch.setenv("TEST_PG_URL", postgres_database)  # the server's environment too
    with started(tmp_path, "--config", str(config)) as (_, base):
        body = {"user": {"username": "pat", "email": "pat@example.com", "password": PASSWORD}}
        assert httpx.post(f"{base}/accounts/password/register", json=body).status_code == 200
        login = httpx.post(
            f"{base}/accounts/password/authenticate",
            json={"user": {"username": "pat"}, "password": PASSWORD},
        )
        bearer = {"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
        assert httpx.get(f"{base}/accounts/user", headers=bearer).json()["username"] == "pat"

        runner = CliRunner()
        wide = {"COLUMNS": "200"}
        listed = runner.invoke(
            main, ["users", "list", "--postgres-url", postgres_database], env=wide
        )
        assert listed.exit_code == 0, listed.output
        assert "pat@example.com" in listed.output
        revoked = runner.invoke(
            main, ["sessions", "revoke", "pat", "--all", "--config", str(config)], env=wide
        )
        assert revoked.exit_code == 0, revoked.output
        assert "revoked 1 session" in revoked.output
        assert httpx.get(f"{base}/accounts/user", headers=bearer).json() is None  # at once
    assert not (tmp_path / "accounts.db").exists()  # nothing went to SQLite


def test_one_database_at_a_time(tmp_path: Path) -> None:
    both = CliRunner().invoke(
        main,
        ["users", "list", "--postgres-url", "postgresql://x/y", "--mongodb-url", "mongodb://x"],
    )
    assert both.exit_code != 0 and "not both" in both.output


def test_workers_share_one_postgres(tmp_path: Path, postgres_database: str) -> None:
    """`serve --workers 2` on PostgreSQL: a logout in one worker holds in the other at once,
    and of ten concurrent refreshes with one token, across both, exactly one wins."""
    workers_share_one_database(tmp_path, "--postgres-url", postgres_database)
