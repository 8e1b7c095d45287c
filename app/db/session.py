"""Engine and session factory. Background services open short sessions of their own."""

from __future__ import annotations

import orjson
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def async_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and point them at asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got driver {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        # orjson for JSONB parameters and results: payloads and outputs cross this on every task.
        json_serializer=lambda value: orjson.dumps(value).decode(),
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout; a connection found dead raises once and the
        # pool discards it (callers already retry or fail the unit of work cleanly).
        pool_pre_ping=False,
        pool_recycle=1800,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine a session factory is bound to (the hot paths take connections from its pool directly)."""
    engine = sessionmaker.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the session factory is not bound to an AsyncEngine")
    return engine
