"""Real Chromium, with a CDP virtual authenticator, registers and uses a passkey against a real
uvicorn running accounts-server with the password and WebAuthn services
(tests/browser/passkeys-e2e.mjs says what each step asserts; serve_for_browser.py is the server).

Skips, saying why, only when Node, npm or Chromium is missing; a server that cannot start (say,
accounts_webauthn not installed) is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..helpers import free_port, node_unavailable, npm_ci, stop_process

BROWSER = Path(__file__).parent.parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
#: The script's own overall timeout (it closes Chromium itself) and ours, a little longer.
E2E_TIMEOUT_MS = 90_000
NODE_TIMEOUT = E2E_TIMEOUT_MS / 1000 + 30


def chromium() -> str | None:
    """$CHROMIUM, else `chromium` on PATH, else /usr/bin/chromium; None if none exists."""
    if configured := os.environ.get("CHROMIUM"):
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or (str(CHROMIUM) if CHROMIUM.exists() else None)


def wait_for_health(server: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/accounts/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise AssertionError(f"the server exited with {server.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError("the server did not answer /accounts/health within 30 s")
        time.sleep(0.1)


def run_e2e(port: int, browser: str) -> tuple[int | None, str]:
    """`node passkeys-e2e.mjs` against the server: (exit status, None on our timeout; output)."""
    env = {
        **os.environ,
        "APP_URL": f"http://localhost:{port}",
        "CHROMIUM": browser,
        "E2E_TIMEOUT_MS": str(E2E_TIMEOUT_MS),
    }
    node = subprocess.Popen(
        ["node", str(BROWSER / "passkeys-e2e.mjs")],
        cwd=BROWSER,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = node.communicate(timeout=NODE_TIMEOUT)
        return node.returncode, output.decode(errors="replace")
    except subprocess.TimeoutExpired:
        # SIGTERM first: playwright-core closes Chromium on it (SIGKILL would orphan it).
        stop_process(node)
        output, _ = node.communicate()
        return None, output.decode(errors="replace") + f"\n(killed after {NODE_TIMEOUT} s)"


def test_passkeys_in_a_real_browser(tmp_path: Path) -> None:
    if reason := node_unavailable("passkeys browser test"):
        pytest.skip(reason)
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (CI installs it: apt-get install chromium)")
    npm_ci(BROWSER)
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as server_output:
        server = subprocess.Popen(
            [
                sys.executable,
                str(BROWSER / "serve_for_browser.py"),
                str(port),
                str(tmp_path / "accounts.db"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=server_output,
            stderr=subprocess.STDOUT,
        )
        status: int | None = None
        try:
            wait_for_health(server, port)
            status, output = run_e2e(port, browser)
            outcome = f"node exited with {status}\n--- node output ---\n{output}"
        except AssertionError as exc:
            output, outcome = "", f"{exc}; node was not run"
        finally:
            stop_process(server)
    report = f"{outcome}\n--- server output ---\n{log.read_text(errors='replace')[-4000:]}"
    assert status == 0, report
    assert output.strip().endswith("ALL OK"), report
