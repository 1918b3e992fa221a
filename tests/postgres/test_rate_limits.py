"""tests/test_rate_limits.py on PostgreSQL (see conftest.py)."""

from ..test_rate_limits import *  # noqa: F403
