"""tests/http/test_sessions.py on PostgreSQL (see conftest.py)."""

from ..http.test_sessions import *  # noqa: F403
