"""Log lines as JSON objects (`serve --log-format json`): one object a line, for a collector.

Every record becomes `{"time", "level", "logger", "message"}` plus the structured fields a
caller passed as `extra` (the access log's `route`, `status`, `request_id`, `user_id`), and
`exception` with the trace when there is one. What the fields hold is the callers' business:
nothing in this codebase logs a password, a token, a hash or a code (tests/test_logs.py reads
every line of the whole HTTP flow set in both formats to keep it so).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JSONFormatter"]

#: What every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()
