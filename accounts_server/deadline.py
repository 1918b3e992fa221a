"""One time budget for all the store calls of one request.

A store bounds each of its calls (MongoDB: 5 s), but a request makes several, and a frozen
database (a stopped process, a partition that drops packets) makes each of them wait the whole
bound: GET /user took 12 s and a login 12.8 s. Within `store_deadline(seconds)` every call a
store makes over the network shares one budget, counted from the first of them (so reading a
slow client's body does not spend it), and a store that runs out raises `StoreUnavailable`.
The HTTP app opens one per request. Must not import HTTP or a database driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["STORE_DEADLINE", "store_deadline", "store_deadline_at"]

#: Seconds the store calls of one request may take together: the operation bound DESIGN sets.
STORE_DEADLINE = 5.0


class _Budget:
    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at: float | None = None


_current: ContextVar[_Budget | None] = ContextVar("accounts_server_store_deadline", default=None)


@contextmanager
def store_deadline(seconds: float) -> Iterator[None]:
    """Give the store calls made inside one budget of `seconds` (nested: the inner one)."""
    token = _current.set(_Budget(seconds))
    try:
        yield
    finally:
        _current.reset(token)


def store_deadline_at() -> float | None:
    """When the current budget runs out, on the running loop's clock (`asyncio.timeout_at`):
    started by the first call. None outside any `store_deadline`."""
    budget = _current.get()
    if budget is None:
        return None
    if budget.at is None:
        budget.at = asyncio.get_running_loop().time() + budget.seconds
    return budget.at
