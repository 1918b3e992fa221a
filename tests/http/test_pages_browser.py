"""Real Chromium through the hosted pages and the admin console of `accounts-server serve --ui`
on uvicorn, with mail through the test SMTP server (tests/browser/pages-e2e.mjs says what each
step asserts). The script asks this side for what only it can answer: a mailed link (read
from the SMTP server's Maildir) and a TOTP code (pyotp). Screenshots of every page land in
tests/artifacts/pages/ (ignored by git; CI keeps them).

Skips, saying why, only when Node, npm or Chromium is missing."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pyotp
import pytest

from ..helpers import SMTPServer, free_port, node_unavailable, npm_ci, stop_process
from .test_passkeys_browser import BROWSER, chromium, wait_for_health

ARTIFACTS = Path(__file__).parent.parent / "artifacts" / "pages"
E2E_TIMEOUT_MS = 120_000
#: Our bound on the whole conversation, a little over the script's own.
DEADLINE = E2E_TIMEOUT_MS / 1000 + 30
_LINK = re.compile(r"https?://\S+/(?:verify-email|reset-password|enroll-account)/\S+")


def mailed_link(smtp: SMTPServer, address: str, number: int, until: float) -> str:
    """The link in the `number`-th mail to `address` (delivery is another process: polled)."""
    while len(found := smtp.messages(address)) < number:
        if time.monotonic() > until:
            raise TimeoutError(f"no mail {number} to {address}")
        time.sleep(0.05)
    body = next(p for p in found[number - 1].walk() if p.get_content_type() == "text/plain")
    text = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
    match = _LINK.search(text)
    if match is None:
        raise AssertionError(f"no link in {text!r}")
    return match.group(0)


def answer(question: str, smtp: SMTPServer, until: float) -> str:
    kind, *args = question.split()
    if kind == "MAIL":
        return mailed_link(smtp, args[0], int(args[1]), min(until, time.monotonic() + 20))
    if kind == "TOTP":
        return str(pyotp.TOTP(args[0]).at(time.time() + int(args[1])))
    return f"!unknown question {question!r}"


def converse(node: subprocess.Popen[str], smtp: SMTPServer) -> str:
    """Relay the script's questions until it ends; its output (questions included)."""
    assert node.stdout is not None and node.stdin is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, args=(node.stdout,), daemon=True).start()
    until = time.monotonic() + DEADLINE
    output: list[str] = []
    while True:
        try:
            line = lines.get(timeout=max(until - time.monotonic(), 0.01))
        except queue.Empty:
            output.append(f"(stopped after {DEADLINE} s)")
            break
        if line is None:
            break
        output.append(line)
        if line.startswith("?"):
            try:
                reply = answer(line[1:], smtp, until)
            except (TimeoutError, AssertionError) as exc:
                reply = f"!{exc}"
            node.stdin.write(reply + "\n")
            node.stdin.flush()
    return "\n".join(output)


def test_pages_and_console_in_a_real_browser(tmp_path: Path, smtp: SMTPServer) -> None:
    if reason := node_unavailable("pages browser test"):
        pytest.skip(reason)
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (CI installs it: apt-get install chromium)")
    npm_ci(BROWSER)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    smtp.checkpoint()
    port = free_port()
    log = tmp_path / "server.log"
    serve = [
        sys.executable,
        "-m",
        "accounts_server.cli",
        "serve",
        "--port",
        str(port),
        "--ui",
        "--admin",
        "admin@example.com",
        "--smtp-url",
        f"smtp://127.0.0.1:{smtp.port}",
        "--mail-from",
        "accounts@example.com",
    ]
    status: int | None = None
    output = ""
    with log.open("wb") as server_output:
        server = subprocess.Popen(
            serve,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=server_output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_health(server, port)
            env = {
                **os.environ,
                "APP_URL": f"http://localhost:{port}",
                "CHROMIUM": browser,
                "ARTIFACTS": str(ARTIFACTS),
                "E2E_TIMEOUT_MS": str(E2E_TIMEOUT_MS),
            }
            node = subprocess.Popen(
                ["node", str(BROWSER / "pages-e2e.mjs")],
                cwd=BROWSER,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                output = converse(node, smtp)
            finally:
                stop_process(node)  # SIGTERM: playwright-core closes Chromium on it
                status = node.wait()
                for stream in (node.stdin, node.stdout):
                    if stream is not None:
                        stream.close()
        finally:
            stop_process(server)
    server_log = log.read_text(errors="replace")[-4000:]
    report = f"node exited with {status}\n{output}\n--- server ---\n{server_log}"
    assert status == 0, report
    assert output.strip().endswith("ALL OK"), report
    assert len(list(ARTIFACTS.glob("*.png"))) >= 15, report
