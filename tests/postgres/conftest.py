"""The server and HTTP suites again, on PostgreSQL: this `store` replaces the SQLite one for
every module here (each re-exports one suite's tests), each test in a schema of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from accounts_server import Store

from ..helpers import postgres_store


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[Store]:
    async with postgres_store(postgres_url) as opened:
        yield opened
