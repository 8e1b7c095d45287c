"""A replica frozen inside a transaction (a long GC pause, SIGSTOP) must not hold its row locks past the
replica timeout: PostgreSQL ends its sessions that sit idle in a transaction, so the replicas that declare it
dead can update its agents."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text

from app.db.session import create_engine
from tests.support import sql


async def test_a_session_idle_in_a_transaction_is_ended_and_its_locks_freed(database_url: str) -> None:
    frozen = create_engine(database_url, pool_size=1, idle_in_transaction=1.0)
    other = await sql.connect(database_url)
    try:
        connection = await frozen.connect()
        # The transaction takes a lock and then says nothing more, as a frozen process would.
        await connection.execute(text("SELECT pg_advisory_xact_lock(424242)"))
        # Another session gets the same lock only once the server has ended the frozen one.
        await asyncio.wait_for(other.execute("SELECT pg_advisory_xact_lock(424242)"), timeout=15)
        with contextlib.suppress(Exception):
            await connection.close()
    finally:
        await other.close()
        await frozen.dispose()


async def test_without_the_setting_the_lock_is_held(database_url: str) -> None:
    """The check above can fail: a session that is not ended keeps the lock."""
    engine = create_engine(database_url, pool_size=1)
    other = await sql.connect(database_url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(434343)"))
            assert not await other.fetchval("SELECT pg_try_advisory_xact_lock(434343)")
            await connection.rollback()
    finally:
        await other.close()
        await engine.dispose()
