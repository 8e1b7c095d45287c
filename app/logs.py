"""Logging set-up: text or one JSON object per line.

Secrets in URLs and headers are redacted before anything is written."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agentplane._sdk_logs import Redacting

_CONTEXT_FIELDS = ("task_id", "agent_id", "assignment_id", "session_id", "replica_id", "model", "event")


# The current span's (trace id, span id), set by app.tracing when tracing is on; None: tracing is off, and a
# log line costs one branch more.
_trace_ids: Callable[[], tuple[str, str] | None] | None = None


def enable_trace_ids(current: Callable[[], tuple[str, str] | None]) -> None:
    global _trace_ids
    _trace_ids = current


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = str(value)
        if _trace_ids is not None and (ids := _trace_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = [
            f"{f}={getattr(record, f)}" for f in _CONTEXT_FIELDS if getattr(record, f, None) is not None
        ]
        return f"{base} {' '.join(extras)}" if extras else base


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(Redacting())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers[:] = []
        uv.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
