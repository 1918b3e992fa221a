"""Hosted pages for users, served by the app itself when asked (`create_app(ui=...)`,
`serve --ui`): server-rendered Jinja2 templates, plain CSS, no build step. `config.py` holds
the settings, `web.py` what every page shares (CSRF, cookies, headers), `pages.py` the user's
pages, `mount.py` the mounted app. Only `mount.py` and what it imports load Jinja2 and segno.
"""

from __future__ import annotations

from .config import UIConfig

__all__ = ["UIConfig"]
