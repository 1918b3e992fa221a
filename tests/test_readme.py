"""The README's two set-up commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import httpx

from .helpers import free_port

ROOT = Path(__file__).parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_has_exactly_a_serve_and_a_test_command() -> None:
    serve, test = quick_start_commands()
    assert serve.endswith("accounts-server serve")
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    _, test = quick_start_commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_custom_service_in_the_readme_is_the_example_that_runs() -> None:
    """ "Writing a login service" shows examples/api_key_service's class, which the tests run:
    the README cannot drift from code that works."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Writing a login service", 1)[1].split("\n## ", 1)[0]
    shown = section.split("```python\n", 1)[1].split("```", 1)[0]
    source = (ROOT / "examples" / "api_key_service" / "api_key_service" / "__init__.py").read_text()
    assert shown == source[source.index("class ApiKeyService:") :]


def service_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Run it as a service", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _curl(line: str, env: dict[str, str]) -> str:
    """The README's curl line, by curl when installed, else the same request by httpx (a
    fresh machine may have no curl): the status line and headers, as `curl -si` prints."""
    if shutil.which("curl"):
        done = subprocess.run(
            ["bash", "-c", line], env=env, capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout
    words = shlex.split(line)
    method = words[words.index("-X") + 1] if "-X" in words else "GET"
    url = next(w for w in words if w.startswith("http"))
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    answer = httpx.request(method, url, headers=headers, timeout=10)
    if not {"-i", "-si"} & set(words):  # without -i, curl prints the body only
        return answer.text
    shown = "".join(f"{k}: {v}\n" for k, v in answer.headers.items())
    return f"HTTP/1.1 {answer.status_code}\n{shown}"


def test_the_run_it_as_a_service_commands_work(tmp_path: Path) -> None:
    """Each line of the README's block, in order, in a fresh directory; the server on a free
    port (the README's 8000 swapped for it), its whole process group stopped at the end."""
    port = str(free_port())
    bin_dir = str(Path(sys.executable).parent)  # accounts-server, as an activated venv has it
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ACCOUNTS_PORT": port}
    env.pop("ACCOUNTS_CONFIG", None)
    copy, show, serve, curl, scrape = (line.replace("8000", port) for line in service_commands())
    example = str(ROOT / "accounts.example.toml")
    copied = copy.replace("accounts.example.toml", example)
    subprocess.run(["bash", "-c", copied], cwd=tmp_path, env=env, check=True, timeout=30)
    shown = subprocess.run(
        ["bash", "-c", show], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "ACCOUNTS_PORT" in shown.stdout and "accounts.toml" in shown.stdout
    server = subprocess.Popen(
        ["bash", "-c", serve],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, "serve exited"
            with suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/accounts/health").status_code == 200:
                    break
            assert time.monotonic() < deadline, "serve did not answer within 30 s"
            time.sleep(0.1)
        printed = _curl(curl, env).lower()
        assert printed.startswith("http/1.1 200")
        assert "access-control-allow-origin: http://localhost:3000" in printed
        assert "accounts_request_duration_seconds_count" in _curl(scrape, env)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
