"""Engine and session factory. Background services open short sessions of their own."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.db.outage import OUTAGES


def async_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and point them at asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got driver {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


CONNECT_TIMEOUT_SECONDS = 10.0


def create_engine(
    url: str, *, pool_size: int = 10, held: int = 0, idle_in_transaction: float | None = None
) -> AsyncEngine:
    """``held``: connections some writers keep for good (app.db.raw.HeldConnection), on top of ``pool_size``
    kept open and as many again opened for bursts.

    ``idle_in_transaction``: seconds after which PostgreSQL ends a session of ours that sits in a transaction
    without sending anything. Our transactions never wait on anything but the database, so only a frozen
    process (a long GC pause, SIGSTOP, a partition) hits it; the locks it held are freed, and the replicas
    that declare it dead are not blocked behind them."""
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_SECONDS}
    if idle_in_transaction:
        milliseconds = max(1000, round(idle_in_transaction * 1000))
        connect_args["server_settings"] = {"idle_in_transaction_session_timeout": str(milliseconds)}
    engine = create_async_engine(
        async_url(url),
        # orjson for JSONB parameters and results: payloads and outputs cross this on every task.
        json_serializer=lambda value: orjson.dumps(value).decode(),
        json_deserializer=orjson.loads,
        pool_size=pool_size + held,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout; a connection found dead raises once and the
        # pool discards it (callers already retry or fail the unit of work cleanly).
        pool_pre_ping=False,
        pool_recycle=1800,
        # asyncpg waits 60 s for an unreachable host by default: an outage should be reported (503) sooner.
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "connect", _connected)
    return engine


def _connected(dbapi_connection: Any, connection_record: Any) -> None:
    # A new connection is proof that the database is reachable: ends an outage that failed requests reported.
    OUTAGES.succeeded()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine a session factory is bound to (the hot paths take connections from its pool directly)."""
    engine = sessionmaker.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the session factory is not bound to an AsyncEngine")
    return engine
