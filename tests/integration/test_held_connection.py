"""A held connection: kept across uses, discarded when its state is unknown, renewed when old, and after its
release each use checks a pooled connection out and back in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import raw
from app.db.session import create_engine


@pytest.fixture
async def engine(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url, pool_size=1)
    yield engine
    await engine.dispose()


async def backend(held: raw.HeldConnection) -> int:
    async with held.connection() as db:
        pid: int = await db.fetchval("SELECT pg_backend_pid()")
        return pid


async def test_the_connection_is_kept_discarded_when_unknown_and_renewed_when_old(
    engine: AsyncEngine,
) -> None:
    held = raw.HeldConnection(engine)
    first = await backend(held)
    assert await backend(held) == first  # kept

    async def fails_in_a_transaction() -> None:
        async with held.transaction() as db:
            await db.execute("SELECT 1")
            raise ZeroDivisionError  # rolled back: the connection is in a known state, kept

    with pytest.raises(ZeroDivisionError):
        await fails_in_a_transaction()
    assert await backend(held) == first

    async with held.connection() as db:
        await db.execute("BEGIN")  # left in a transaction: its state is the caller's mess, discarded
    second = await backend(held)
    assert second != first

    held.MAX_AGE = 0.0
    assert await backend(held) != second  # old: given back and another opened
    held.MAX_AGE = raw.HeldConnection.MAX_AGE

    await held.release()
    after = await backend(held)  # a straggler after release: a pooled connection, checked back in
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert after > 0
