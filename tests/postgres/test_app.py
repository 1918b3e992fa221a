"""tests/http/test_app.py (the HTTP smoke tests) on PostgreSQL (see conftest.py)."""

from ..http.test_app import *  # noqa: F403
