"""The README's two set-up commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

from pathlib import Path

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
