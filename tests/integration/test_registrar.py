"""Coalesced registrations against real Postgres: concurrent registrations share one transaction, each agent
still gets its own row and capability index, one agent's refusal or bad row is never another's, a repeated id
is registered twice in order, and an agent moving from another replica is announced to it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.agents.registrar import Registrar
from app.config import Settings, load_settings
from app.db.session import create_engine, create_sessionmaker
from app.errors import AgentRejected, CloseCode
from app.gateway.protocol import CapabilitySpec, Register
from app.tasks.service import BUS_CHANNEL
from tests.support import sql


@pytest.fixture
async def engine(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url, pool_size=4)
    yield engine
    await engine.dispose()


def registrar(engine: AsyncEngine, url: str, replica: str = "r1") -> Registrar:
    settings: Settings = load_settings(database_url=url, replica_id=replica)
    return Registrar(settings=settings, sessionmaker=create_sessionmaker(engine))


def frame(agent_id: str | None, *capabilities: str, model: str = "claude-x") -> Register:
    return Register(
        agent_id=agent_id,
        model=model,
        capabilities=[CapabilitySpec(name=name, version="1") for name in capabilities or ("echo",)],
        max_concurrency=3,
    )


async def capabilities_of(url: str, agent_id: str) -> dict[str, str]:
    connection = await sql.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT name, version FROM agent_capabilities WHERE agent_id = $1", agent_id
        )
    finally:
        await connection.close()
    return {row["name"]: row["version"] for row in rows}


async def test_concurrent_registrations_share_one_transaction(
    engine: AsyncEngine, fresh_database_url: str
) -> None:
    registry = registrar(engine, fresh_database_url)
    key = uuid.uuid4()
    registered = await asyncio.gather(
        *(
            registry.register(frame(f"agent-{i}", "echo", f"cap-{i}"), key_id=key, admin=False)
            for i in range(40)
        )
    )
    assert [agent.id for agent in registered] == [f"agent-{i}" for i in range(40)]
    assert {agent.version for agent in registered} == {1}
    assert all(agent.status == "active" and agent.max_concurrency == 3 for agent in registered)
    assert (registry.batches, registry.coalesced) == (1, 40)
    assert await capabilities_of(fresh_database_url, "agent-7") == {"echo": "1", "cap-7": "1"}
    assert (
        await sql.fetchval(
            fresh_database_url,
            "SELECT count(*) FROM agents WHERE replica_id = 'r1' AND owner_key_id = $1",
            key,
        )
        == 40
    )

    # A lone registration afterwards is written at once; an agent without an id gets one.
    fresh = await registry.register(frame(None), key_id=key, admin=False)
    assert fresh.id.startswith("agent-")
    assert registry.batches == 2


async def test_a_reconnect_replaces_the_capability_index_and_keeps_the_owner(
    engine: AsyncEngine, fresh_database_url: str
) -> None:
    registry = registrar(engine, fresh_database_url)
    owner = uuid.uuid4()
    first = await registry.register(frame("agent-a", "echo", "old"), key_id=owner, admin=False)
    # An admin key may take the id over; the first owner stays.
    again = await registry.register(
        frame("agent-a", "echo", "new").model_copy(update={"max_concurrency": 7}), key_id=None, admin=True
    )
    assert again.version == first.version + 1
    assert again.max_concurrency == 7
    assert await capabilities_of(fresh_database_url, "agent-a") == {"echo": "1", "new": "1"}
    assert (
        await sql.fetchval(fresh_database_url, "SELECT owner_key_id FROM agents WHERE id = 'agent-a'")
        == owner
    )


async def test_a_refusal_or_a_bad_row_is_only_its_own(engine: AsyncEngine, fresh_database_url: str) -> None:
    registry = registrar(engine, fresh_database_url)
    owner, other = uuid.uuid4(), uuid.uuid4()
    await registry.register(frame("taken"), key_id=owner, admin=False)
    unchecked: dict[str, Any] = {"model": None}  # NOT NULL: the coalesced statement fails as a whole
    bad = Register.model_construct(
        agent_id="bad", name="", **unchecked, capabilities=[CapabilitySpec(name="echo")],
        max_concurrency=1, task_types=None, holding=[], protocol=1,
    )  # fmt: skip
    outcomes = await asyncio.gather(
        registry.register(frame("ok-1"), key_id=other, admin=False),
        registry.register(frame("taken"), key_id=other, admin=False),  # another key's id: refused
        registry.register(bad, key_id=other, admin=False),
        registry.register(frame("ok-2"), key_id=other, admin=False),
        return_exceptions=True,
    )
    first, refused, failed, last = outcomes
    assert isinstance(refused, AgentRejected)
    assert refused.close_code == CloseCode.UNAUTHORIZED
    assert isinstance(failed, asyncpg.NotNullViolationError)
    assert not isinstance(first, BaseException)
    assert first.id == "ok-1"
    assert not isinstance(last, BaseException)
    assert last.id == "ok-2"
    assert (
        await sql.fetchval(fresh_database_url, "SELECT owner_key_id FROM agents WHERE id = 'taken'") == owner
    )
    assert await sql.fetchval(fresh_database_url, "SELECT count(*) FROM agents WHERE id = 'bad'") == 0


async def test_a_repeated_id_registers_twice_in_order(engine: AsyncEngine, fresh_database_url: str) -> None:
    registry = registrar(engine, fresh_database_url)
    key = uuid.uuid4()
    first, second = await asyncio.gather(
        registry.register(frame("twice", "one"), key_id=key, admin=False),
        registry.register(frame("twice", "two"), key_id=key, admin=False),
    )
    assert (first.version, second.version) == (1, 2)
    assert await capabilities_of(fresh_database_url, "twice") == {"two": "1"}


async def test_an_agent_moving_from_another_live_replica_is_announced(
    engine: AsyncEngine, fresh_database_url: str
) -> None:
    key = uuid.uuid4()
    await registrar(engine, fresh_database_url, "r1").register(frame("mover"), key_id=key, admin=False)
    heard: list[dict[str, object]] = []
    listener = await sql.connect(fresh_database_url)
    await listener.add_listener(BUS_CHANNEL, lambda *args: heard.append(orjson.loads(args[3])))
    try:
        moved = await registrar(engine, fresh_database_url, "r2").register(
            frame("mover"), key_id=key, admin=False
        )
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.02)
    finally:
        await listener.close()
    assert moved.version == 2
    assert heard == [{"k": "replace", "agent": "mover", "replica": "r2"}]
