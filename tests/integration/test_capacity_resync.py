"""The fleet's in-memory capacity count is replaced by the database's open assignments on its own schedule."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents.service import RegisteredAgent
from app.db.session import create_engine, create_sessionmaker
from app.dispatch.fleet import Fleet
from app.dispatch.resync import CapacityResync
from app.tasks.work import Outcome


@pytest.fixture
async def maker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url, pool_size=1)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_a_drifted_count_is_put_right(maker: async_sessionmaker[AsyncSession]) -> None:
    fleet = Fleet()
    fleet.agent_joined(
        RegisteredAgent(
            id="drifted", name="drifted", model="gpt-4", capabilities=frozenset({"x"}), max_concurrency=2,
            success_rate=1.0, active=0, requeued=Outcome(), version=1,
        )
    )  # fmt: skip
    fleet.leased("drifted", uuid.uuid4())
    fleet.leased("drifted", uuid.uuid4())  # two slots taken by leases the database never recorded
    assert fleet.candidates() == []
    await CapacityResync(sessionmaker=maker, fleet=fleet).resync_once()
    assert [c.agent_id for c in fleet.candidates()] == ["drifted"]
    assert fleet.agents["drifted"].open == set()
