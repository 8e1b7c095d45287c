"""A drain outlives the agent's replica: declared dead, the replica's agents go offline, and the drained one
registers again, elsewhere, still draining; its own goodbye is what ends the drain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.agents import service
from app.db.session import create_engine, create_sessionmaker
from app.gateway.protocol import CapabilitySpec, Register
from tests.support import sql

KEY = uuid.uuid4()


@pytest.fixture
async def engine(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def register(maker: async_sessionmaker[AsyncSession], replica: str) -> service.RegisteredAgent:
    frame = Register(agent_id="drained", model="m", capabilities=[CapabilitySpec(name="echo")])
    async with maker() as session:
        registered = await service.register(
            session,
            frame,
            replica_id=replica,
            allowed_models=(),
            default_concurrency=4,
            key_id=KEY,
            admin=False,
        )
        await session.commit()
        return registered


async def test_a_drain_survives_its_replica_and_ends_with_the_agents_goodbye(
    engine: AsyncEngine, fresh_database_url: str
) -> None:
    maker = create_sessionmaker(engine)
    assert (await register(maker, "r1")).status == "active"
    async with maker() as session:
        await service.drain(session, "drained")
    async with maker() as session:  # r1 is declared dead
        await service.mark_replica_agents_offline(session, "r1", reason="replica r1 stopped heartbeating")
        await session.commit()
    assert (
        await sql.fetchval(fresh_database_url, "SELECT status FROM agents WHERE id = 'drained'") == "offline"
    )

    moved = await register(maker, "r2")
    assert moved.status == "draining"

    async with maker() as session:  # its socket drops: still draining when it comes back
        await service.disconnect(session, "drained", replica_id="r2", version=moved.version)
        await session.commit()
    back = await register(maker, "r2")
    assert back.status == "draining"

    async with maker() as session:  # it closes its socket itself: the drain is over
        await service.disconnect(session, "drained", replica_id="r2", version=back.version, goodbye=True)
        await session.commit()
    assert (await register(maker, "r2")).status == "active"
