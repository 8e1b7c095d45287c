"""Logging a failed database step: an outage once per transition, anything else with its traceback."""

from __future__ import annotations

import logging
from typing import Any

from app.db.outage import OUTAGES, is_outage


def report_failure(log: logging.Logger, exc: BaseException, message: str, **extra: Any) -> bool:
    """True when ``exc`` is a database outage (logged by app.db.outage when the state flips, so a fleet
    reconnecting into an outage does not write a traceback per socket); otherwise logs ``message``."""
    if is_outage(exc):
        OUTAGES.failed(exc)
        return True
    log.error(message, exc_info=exc, extra=extra or None)
    return False
