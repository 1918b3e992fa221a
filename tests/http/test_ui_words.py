"""What the pages call a device and an event."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounts_server.audit import AUDITED
from accounts_server.http.ui.words import EVENTS, device


@pytest.mark.parametrize(
    ("user_agent", "shown"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/150.0.0.0 Safari/537.36",
            "Chrome 150 on Linux",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "Safari 18 on iOS",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
            "Edge 131 on Windows",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.7; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox 133 on macOS",
        ),
        ("curl/8.5.0", "curl 8"),
        ("node", "node"),
        ("python-httpx/0.28.1", "python-httpx 0"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_devices_are_named(user_agent: str | None, shown: str) -> None:
    assert device(user_agent) == shown


@given(st.text(max_size=300))
def test_any_user_agent_gets_a_short_name(user_agent: str) -> None:
    assert len(device(user_agent)) <= 80


def test_every_audited_event_has_words() -> None:
    assert set(AUDITED) <= set(EVENTS)
