"""Telling a database outage from a bad request, and logging an outage once per transition.

An outage (Postgres down, restarting, refusing connections, the pool exhausted) is the server's condition, not
the client's fault: REST answers 503 with `Retry-After`, a WebSocket is closed with a retryable code. Logging
a traceback per request during an outage buries the one line an operator needs, so callers report failures
and recoveries to one ``OutageLog`` that logs only when the state flips.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg
import orjson
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


# SQLSTATE classes that say the data itself cannot be stored: 22 data exception (a value out of range, bad
# text), 23 integrity constraint violation, 54 program limit exceeded (a row or value too large). The same
# frame would fail the same way however often it is tried. Every other error the database answers with
# (57014 statement timeout or cancel, 53xxx disk full or out of memory, 25006 read-only after a failover,
# 40001/40P01 serialization failure or deadlock, ...) is the server's condition of the moment.
_DATA_CLASSES = ("22", "23", "54")
# asyncpg's own refusal to encode a parameter (not the SQLSTATE class 22 ``asyncpg.DataError``)
_CLIENT_DATA_ERROR: type[BaseException] = asyncpg.exceptions._base.DataError


def _driver_errors(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (SQLAlchemy's DBAPIError, the asyncpg adapter's ``__cause__``)."""
    found = [exc]
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        found.append(exc.orig)
    for error in list(found):
        cause = error.__cause__
        if cause is not None and cause not in found:
            found.append(cause)
    return found


def is_data_error(exc: BaseException) -> bool:
    """True when ``exc`` says the data cannot be stored (a poison frame or request), not when the database is
    unavailable or busy: SQLSTATE classes 22, 23 and 54, asyncpg's client-side encoding errors (an integer
    beyond 64 bits for a BIGINT parameter) and orjson's (a value it cannot write)."""
    for error in _driver_errors(exc):
        if isinstance(error, asyncpg.PostgresError):
            sqlstate = getattr(error, "sqlstate", None) or ""
            if sqlstate[:2] in _DATA_CLASSES:
                return True
        elif isinstance(error, _CLIENT_DATA_ERROR | orjson.JSONEncodeError):
            return True
    return False


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached or used right now (not a bad statement)."""
    if is_data_error(exc):  # asyncpg's client-side DataError is an InterfaceError, but no outage
        return False
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


def report_failure(log: logging.Logger, exc: BaseException, message: str, **extra: Any) -> bool:
    """Log a failed database step: True when ``exc`` is an outage (logged once, when the state flips, so a
    fleet reconnecting into an outage does not write a traceback per socket); otherwise ``message`` with its
    traceback, and False."""
    if is_outage(exc):
        OUTAGES.failed(exc)
        return True
    log.error(message, exc_info=exc, extra=extra or None)
    return False
