"""Stores sit below the core: they import its records, errors, input checks and the request
deadline, never the service layer or the server (which import the stores)."""

from __future__ import annotations

import ast
from pathlib import Path

import accounts_server.stores

STORES = Path(accounts_server.stores.__file__).parent
#: What a store may import from the rest of the package (relative to `accounts_server`).
ALLOWED = {"deadline", "errors", "types", "validation"}


def test_stores_import_only_records_errors_and_checks() -> None:
    modules = sorted(STORES.glob("*.py"))
    assert {p.name for p in modules} >= {"base.py", "sqlite.py", "mongo.py"}
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module in ALLOWED, f"{path.name}: imports ..{node.module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("accounts_server"), f"{path.name}: absolute"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("accounts_server"), f"{path.name}: absolute"
