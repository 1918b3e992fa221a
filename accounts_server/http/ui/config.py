"""The hosted pages' settings; importable without Jinja2 (the app checks them at startup)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ...errors import ConfigurationError

__all__ = ["UIConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UIConfig:
    """The hosted pages' settings. `return_to` may send a user back only to these exact
    origins (an open redirect otherwise); `templates` is a directory whose files replace the
    shipped ones of the same name (branding); `title` names the site on every page.

    Raises:
        ConfigurationError: an origin that is not exact, or a templates path that is not a
            directory.
    """

    return_to_origins: tuple[str, ...] = ()
    templates: Path | None = None
    title: str = "Accounts"

    def __post_init__(self) -> None:
        for origin in self.return_to_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ConfigurationError(f"return_to origin {origin!r} is not scheme://host[:port]")
        if self.templates is not None and not self.templates.is_dir():
            raise ConfigurationError(f"UI templates: {self.templates} is not a directory")
