"""tests/test_server.py on PostgreSQL (see conftest.py)."""

from ..test_server import *  # noqa: F403
