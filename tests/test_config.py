"""`serve`'s settings from a TOML file, `ACCOUNTS_*` variables and the command line: what
`config show` reports through click's runner, and what a real `serve` process does with them
(mail logged instead of sent, CORS, a service's own table) over TCP."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from accounts_server.cli import main

from .helpers import PASSWORD, free_port, stop_process

ROOT = Path(__file__).parent.parent
#: Wide enough that rich tables do not fold values.
WIDE = {"COLUMNS": "250"}


def show(*args: str, env: dict[str, str] | None = None, exit_code: int = 0) -> str:
    result = CliRunner().invoke(main, ["config", "show", *args], env={**WIDE, **(env or {})})
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    return result.output


def row(output: str, key: str) -> tuple[str, str]:
    """(value, source) of one setting in `config show`'s table."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if cells and cells[0] == key:
            return cells[1], cells[2]
    raise AssertionError(f"{key} not shown:\n{output}")


def test_command_line_over_environment_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text("port = 8001\naccess_lifetime = 5\nissuer = 'from-file'\n")
    env = {"ACCOUNTS_PORT": "8002", "ACCOUNTS_ISSUER": "from-env"}
    output = show("--config", str(config), "--issuer", "from-cli", env=env)
    assert row(output, "issuer") == ("from-cli", "command line")
    assert row(output, "port") == ("8002", "ACCOUNTS_PORT")
    assert row(output, "access_lifetime") == ("5", str(config))
    assert row(output, "audience") == ("accounts-server/api", "default")
    # The file named by a variable is read the same way.
    by_variable = show(env={"ACCOUNTS_CONFIG": str(config)})
    assert row(by_variable, "port") == ("8001", str(config))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 8000", "unknown setting 'prot' (did you mean 'port'?)"),
        ("port = 'eighty'", "port: 'eighty' is not a valid integer range"),
        ("port = 70000", "port: 70000 is not in the range 0<=x<=65535"),
        ("port = ", "not valid TOML"),
        ("mail = 'carrier-pigeon'", "mail: 'carrier-pigeon' is not one of 'smtp', 'log', 'none'"),
        ("services = 3", "services must be tables"),
        ("smtp_url = { env = 'NOT_SET_ANYWHERE' }", "smtp_url: environment variable"),
    ],
)
def test_a_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text + "\n")
    output = show("--config", str(config), exit_code=2)
    assert f"Error: {config}: " in output
    assert message in output


def test_a_bad_service_setting_stops_serve_before_it_creates_anything(tmp_path: Path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text("[services.password]\nmin_lenght = 12\n")
    result = CliRunner().invoke(
        main, ["serve", "--config", str(config), "--db", str(tmp_path / "a.db")], env=WIDE
    )
    assert result.exit_code == 1, result.output
    assert "Error: services.password: unknown setting(s) min_lenght" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accounts.toml"]  # no key, no db


def test_secrets_are_read_by_reference_and_never_shown(tmp_path: Path) -> None:
    secret_file = tmp_path / "google-secret"
    secret_file.write_text("file-held-secret\n")
    config = tmp_path / "accounts.toml"
    config.write_text(
        """
smtp_url = { env = "TEST_SMTP_URL" }
mail_from = "accounts@example.com"

[services.oauth.providers.google]
issuer = "https://accounts.google.com"
client_id = "client-1"
client_secret = { file = "SECRET_FILE" }
redirect_uri = "https://api.example.com/accounts/oauth/google/callback"
""".replace("SECRET_FILE", str(secret_file))
    )
    env = {"TEST_SMTP_URL": "smtp://mailer:smtp-password@mail.example.com:587"}
    output = show("--config", str(config), env=env)
    assert "smtp-password" not in output and "file-held-secret" not in output
    assert row(output, "smtp_url")[0] == "smtp://mailer:***@mail.example.com:587"
    assert row(output, "services.oauth.providers.google.client_secret") == ("***", str(config))
    assert row(output, "services.oauth.providers.google.client_id")[0] == "client-1"


def test_the_example_file_is_a_valid_configuration() -> None:
    output = show("--config", str(ROOT / "accounts.example.toml"))
    assert row(output, "services.password.min_length")[0] == "12"
    assert row(output, "cors_origin")[0] == "http://localhost:3000"


@contextmanager
def serve(workdir: Path, *args: str) -> Iterator[tuple[httpx.Client, subprocess.Popen[str]]]:
    """`accounts-server serve` in its own process on a free port, up once /health answers
    (within 20 s); stopped by its PID however the test ends."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "accounts_server.cli", "serve", "--port", str(port), *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/accounts"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"serve exited early:\n{process.stdout.read() if process.stdout else ''}"
                )
            with suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("serve did not answer /health within 20 s")
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client, process
    finally:
        stop_process(process)
        if process.stdout:
            process.stdout.close()


def _read_until(process: subprocess.Popen[str], pattern: str, timeout: float = 10) -> re.Match[str]:
    """The first output line matching `pattern` within `timeout` seconds (lines are read by a
    thread, so a line that never comes fails the test instead of blocking it)."""
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"serve did not print {pattern!r} within {timeout} s:\n{''.join(seen)}")


def test_a_configured_serve_logs_mail_allows_its_origin_and_applies_service_tables(
    tmp_path: Path,
) -> None:
    """Without SMTP the reset mail is logged (in the operator's own words, from the templates
    directory), and its link resets the password; the file's
    CORS origin may call the API, another origin gets no CORS headers; the password service's
    table raises the minimum length."""
    templates = tmp_path / "mail"
    templates.mkdir()
    (templates / "reset.subject").write_text("A new password for Example\n")
    (templates / "reset.txt").write_text("Choose it here: $url\n")
    config = tmp_path / "accounts.toml"
    config.write_text(
        'site_url = "https://app.example.com"\n'
        'cors_origin = ["https://app.example.com"]\n'
        f'mail_templates = "{templates}"\n'
        "[services.password]\nmin_length = 30\n"
    )
    with serve(tmp_path, "--config", str(config)) as (api, process):
        short = {"user": {"email": "ann@example.com", "password": PASSWORD}}  # 28 characters
        refused = api.post("/password/register", json=short)
        assert refused.status_code == 422, refused.text
        assert "at least 30 characters" in refused.json()["message"]
        user = {"email": "ann@example.com", "password": PASSWORD + "!!"}
        assert api.post("/password/register", json={"user": user}).status_code == 200

        assert api.post("/password/sendResetPasswordEmail", json={"email": "ann@example.com"})
        link = _read_until(
            process,
            r"mail to ann@example\.com: A new password for Example: "
            r"(https://app\.example\.com/reset-password/\S+)",
        )
        token = link.group(1).rsplit("/", 1)[1]
        reset = api.post(
            "/password/resetPassword",
            json={"token": token, "newPassword": "a new password, long enough for 30"},
        )
        assert reset.status_code == 200, reset.text

        preflight = {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        allowed = api.options("/password/authenticate", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert allowed.headers["access-control-allow-credentials"] == "true"
        other = api.get("/user", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_mail_none_keeps_the_mail_routes_unavailable(tmp_path: Path) -> None:
    with serve(tmp_path, "--mail", "none") as (api, _):
        user = {"email": "bo@example.com", "password": PASSWORD}
        assert api.post("/password/register", json={"user": user}).status_code == 200
        answer = api.post("/password/sendResetPasswordEmail", json={"email": "bo@example.com"})
        assert answer.status_code == 503
        assert answer.json()["code"] == "MailUnavailable"


def test_a_wildcard_cors_origin_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--db", str(tmp_path / "a.db"), "--cors-origin", "*"], env=WIDE
    )
    assert result.exit_code == 1, result.output
    assert "CORS origin '*' is not an exact origin" in result.output


def test_an_admin_named_by_email_administers_once_the_address_is_verified(
    tmp_path: Path,
) -> None:
    """An address anyone could register is not enough: it must be verified; a user id from
    the file works as it is."""
    config = tmp_path / "accounts.toml"
    config.write_text('admin = ["Ann@Example.com"]\n')
    with serve(tmp_path, "--config", str(config)) as (api, process):
        for name in ("ann", "bob"):
            user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
            assert api.post("/password/register", json={"user": user}).status_code == 200
        login = api.post("/password/authenticate", json={"user": "ann", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
        assert api.get("/admin/users", headers=auth).status_code == 403
        api.post("/password/sendVerificationEmail", json={"email": "ann@example.com"})
        link = _read_until(process, r"mail to ann@example\.com: .*/verify-email/(\S+)")
        assert api.post("/password/verifyEmail", json={"token": link.group(1)}).status_code == 200
        listed = api.get("/admin/users", headers=auth)
        assert listed.status_code == 200, listed.text
        bob = api.post("/password/authenticate", json={"user": "bob", "password": PASSWORD})
        bob_auth = {"Authorization": f"Bearer {bob.json()['tokens']['accessToken']}"}
        assert api.get("/admin/users", headers=bob_auth).status_code == 403


def test_a_database_password_is_redacted_in_every_spelling() -> None:
    for url in (
        "postgresql://app:s3cret@db/accounts",
        "postgresql://app@db/accounts?sslmode=require&password=s3cret",
        "host=db user=app password=s3cret dbname=accounts",
    ):
        output = show("--postgres-url", url)
        assert "s3cret" not in output and "postgres_url" in output, output
