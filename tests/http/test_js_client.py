"""The official accounts-js client, from npm and unchanged, drives a real uvicorn running
accounts-server (tests/js/client-e2e.mjs says what each step asserts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..helpers import SMTPServer, free_port

JS = Path(__file__).parent.parent / "js"


def npm_install() -> None:
    """Install the pinned client once (the lockfile pins versions and integrity hashes)."""
    if (JS / "node_modules" / "@accounts" / "client").exists():
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=JS,
        check=True,
        capture_output=True,
        timeout=600,
    )


def test_official_client_end_to_end(tmp_path: Path, smtp: SMTPServer) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the accounts-js client test needs Node and npm, which are not installed")
    npm_install()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            str(JS / "serve_for_client.py"),
            str(port),
            str(tmp_path / "a.db"),
            str(smtp.port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/accounts/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        env = {**os.environ, "API_URL": f"http://127.0.0.1:{port}", "MAILDIR": str(smtp.maildir)}
        result = subprocess.run(
            ["node", str(JS / "client-e2e.mjs")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith("ALL OK"), result.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout:
            server.stdout.close()
