"""tests/services/test_password_flows.py on PostgreSQL (see conftest.py)."""

from ..services.test_password_flows import *  # noqa: F403
