"""Logging for agent processes: plain lines, with keys and tokens redacted before anything is written.

The redaction is the server's too (app.logs adds JSON output); it lives here because an agent machine runs
without the server installed."""

from __future__ import annotations

import logging
import re

_SECRETS = (
    (re.compile(r"((?:token|key|api_key)=)[^&\s\"']+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(Bearer\s+)\S+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\bap_[A-Za-z0-9_\-]{20,}"), "ap_[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), "sk-[redacted]"),  # OpenAI and Anthropic key shapes
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redacting())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The providers' HTTP clients log every request at INFO; an agent's log is about its tasks.
    for noisy in ("httpx", "httpcore", "anthropic", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
