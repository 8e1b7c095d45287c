"""asyncpg itself, under SQLAlchemy's pool, for the few statements every task passes through.

The dispatcher's claim and lease and the frame batcher's reads and writes run once per task (or per batch of
tasks). Through SQLAlchemy each costs statement set-up, per-row parameter processing and result wrapping,
and an executemany is one statement per row for Postgres; together that was most of the server's CPU under
load. Here those paths talk to asyncpg directly: set-based statements (``UPDATE ... FROM unnest(...)``, one
per table per batch) whose text is fixed, so asyncpg prepares each once per connection. Everything else stays
on the ORM. Connections come from, and go back to, the engine's pool; JSONB values cross as JSON text (the
codec SQLAlchemy installs on every connection) and come back decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
import orjson
from sqlalchemy import Column, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

Driver: TypeAlias = asyncpg.Connection

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


@asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[Driver]:
    """A pooled connection outside any transaction: each statement commits on its own. For work that is one
    statement (a statement is atomic by itself), it saves the BEGIN and COMMIT round trips."""
    async with engine.connect() as pooled:
        driver: Driver = (await pooled.get_raw_connection()).driver_connection
        try:
            yield driver
        finally:
            # SQLAlchemy starts no transaction here, so its reset on return would end none: a connection that
            # is dead, or still in a transaction (its ROLLBACK failed or was cancelled), is discarded.
            if driver.is_closed() or driver.is_in_transaction():
                await pooled.invalidate()


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[Driver]:
    """A pooled connection in a transaction of its own: committed on exit, rolled back on error."""
    async with connection(engine) as driver, driver.transaction():
        yield driver


class HeldConnection:
    """A pooled connection kept by one writer that runs one statement (or transaction) at a time: the
    intake's group commit, a frame batcher's shard, the dispatcher. Checking a connection out of SQLAlchemy's
    pool and back in costs two passes through its machinery per statement (at low rates, a tenth of a
    millisecond each on the path of every task); held, it is paid once. A connection whose state is unknown
    (closed, still in a transaction, or interrupted mid-statement) is discarded and the next use opens
    another."""

    MAX_AGE = 1800.0  # seconds, as the pool's pool_recycle

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pooled: AsyncConnection | None = None
        self._driver: Driver | None = None
        self._opened = 0.0
        self._released = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Driver]:
        """The held connection, outside any transaction (each statement commits on its own)."""
        if self._released:  # a straggler after shutdown began: a pooled connection, given back after
            async with connection(self.engine) as pooled:
                yield pooled
            return
        if self._driver is not None and time.monotonic() - self._opened > self.MAX_AGE:
            await self.discard()  # closed and replaced, as the pool recycles its own
        if self._driver is None or self._pooled is None:
            self._pooled = await self.engine.connect()
            self._driver = (await self._pooled.get_raw_connection()).driver_connection
            self._opened = time.monotonic()
        driver: Driver = self._driver
        try:
            yield driver
        except asyncio.CancelledError:
            await asyncio.shield(self.discard())
            raise
        finally:
            if (driver.is_closed() or driver.is_in_transaction()) and self._driver is driver:
                await self.discard()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Driver]:
        """The held connection in a transaction of its own: committed on exit, rolled back on error."""
        async with self.connection() as driver, driver.transaction():
            yield driver

    async def discard(self) -> None:
        pooled, self._pooled, self._driver = self._pooled, None, None
        if pooled is not None:
            with contextlib.suppress(Exception):
                await pooled.invalidate()
            with contextlib.suppress(Exception):
                await pooled.close()

    async def release(self) -> None:
        """Give the connection back to the pool (at shutdown: later uses check one out each time)."""
        self._released = True
        pooled, self._pooled, self._driver = self._pooled, None, None
        if pooled is not None:
            with contextlib.suppress(Exception):
                await pooled.close()


async def driver_of(session: AsyncSession) -> Driver:
    """The asyncpg connection under a session, inside the session's transaction. The session must have run a
    statement already: SQLAlchemy sends BEGIN with its first one."""
    connection = await session.connection()
    driver: Driver = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        raise RuntimeError(
            "driver_of() before the session's first statement: it would run outside its transaction"
        )
    return driver


def json_text(value: Any) -> str | None:
    """A JSONB parameter: JSON text, or SQL NULL for None."""
    return None if value is None else orjson.dumps(value, default=str).decode()


@functools.cache
def pg_type(column: Column[Any]) -> str:
    return str(column.type.compile(dialect=_DIALECT))


def is_json(column: Column[Any]) -> bool:
    return pg_type(column) in {"JSON", "JSONB"}


def unnest(table: Table, names: Sequence[str], *, first: int = 1) -> str:
    """``unnest($1::type[], ...) WITH ORDINALITY AS v(name, ..., ord)``: one array parameter per column."""
    arrays = []
    for offset, name in enumerate(names):
        column = table.c[name]
        if pg_type(column).endswith("]"):
            raise ValueError(f"{table.name}.{name} is an array column: unnest would flatten it")
        arrays.append(f"${first + offset}::{pg_type(column)}[]")
    return f"unnest({', '.join(arrays)}) WITH ORDINALITY AS v({', '.join(names)}, ord)"


def columns_of(table: Table, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """Rows (values in ``names`` order) as one list per column, JSON columns encoded."""
    columns: list[list[Any]] = [[] for _ in names]
    for row in rows:
        for values, value in zip(columns, row, strict=True):
            values.append(value)
    for index, name in enumerate(names):
        if is_json(table.c[name]):
            columns[index] = [json_text(value) for value in columns[index]]
    return columns


def update_from_unnest(table: Table, key: str, names: Sequence[str]) -> str:
    """One UPDATE for many rows: ``$1`` the keys, ``$2...`` the new values of ``names``, one array each."""
    assignments = ", ".join(f"{name} = v.{name}" for name in names)
    return (
        f"UPDATE {table.name} AS t SET {assignments} FROM {unnest(table, [key, *names])} "
        f"WHERE t.{key} = v.{key}"
    )


def insert_from_unnest(table: Table, names: Sequence[str]) -> str:
    """One INSERT for many rows, in the order given (serial ids follow it)."""
    listed = ", ".join(names)
    return f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {unnest(table, names)} ORDER BY ord"
