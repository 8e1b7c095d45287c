"""Telling a database outage from a bad request, and logging an outage once per transition.

An outage (Postgres down, restarting, refusing connections, the pool exhausted) is the server's condition, not
the client's fault: REST answers 503 with `Retry-After`, a WebSocket is closed with a retryable code. Logging
a traceback per request during an outage buries the one line an operator needs, so callers report failures
and recoveries to one ``OutageLog`` that logs only when the state flips.
"""

from __future__ import annotations

import logging
import time

import asyncpg
from sqlalchemy import exc as sa_exc

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2

_DRIVER_OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57P01-03: shutdown, crash, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached or used right now (not a bad statement)."""
    if isinstance(exc, sa_exc.TimeoutError):  # the pool had no connection to give
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        original = exc.orig
        cause = getattr(original, "__cause__", None) or original
        return isinstance(cause, _DRIVER_OUTAGES) or isinstance(original, _DRIVER_OUTAGES)
    if isinstance(exc, sa_exc.InterfaceError | sa_exc.DisconnectionError):
        return True
    return isinstance(exc, _DRIVER_OUTAGES)


class OutageLog:
    """One log line when the database becomes unreachable and one when it is back, not one per request."""

    def __init__(self, name: str = "database") -> None:
        self.name = name
        self.down_since: float | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.error("%s unavailable: %s: %s", self.name, type(exc).__name__, str(exc)[:200])

    def succeeded(self) -> None:
        if self.down_since is not None:
            seconds = time.monotonic() - self.down_since
            self.down_since = None
            logger.warning("%s available again after %.1f s", self.name, seconds)


OUTAGES = OutageLog()
"""The process's one record of the database's state (every path reports to it)."""
