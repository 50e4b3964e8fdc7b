"""Logging set-up: text or JSON lines on stderr, and a limit on repeated identical errors.

The agent is quiet by design (docs/architecture.md, "Logs"): it logs transitions, its start
and its own errors. Structured fields (node, from, to, reason, config) travel as `extra=` on the
record; the JSON format writes them as fields, the text format keeps the human message.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, separators=(",", ":"))


class RepeatFilter(logging.Filter):
    """Lets one of a run of identical warnings/errors through per `window` seconds.

    Identical = same logger, level, message template and node. The first line after a quiet
    window says how many were held back. Transition lines (extra `transition=True`) are never
    held back: each one is news.
    """

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._seen: dict[tuple[Any, ...], tuple[float, int]] = {}  # key -> (last shown, held)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "transition", False):
            return True
        key = (record.name, record.levelno, str(record.msg), getattr(record, "node", None))
        now = self._clock()
        with self._lock:
            shown, held = self._seen.get(key, (None, 0))
            if shown is not None and now - shown < self.window:
                self._seen[key] = (shown, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.suppressed = held
            record.msg = f"{record.msg} ({held} identical lines suppressed in {self.window:g} s)"
        return True


def setup_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once: one handler on stderr with the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # waitress says "Task queue depth" under a probe storm: a healthy agent writes nothing then.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
