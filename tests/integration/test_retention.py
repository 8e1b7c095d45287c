"""Retention against real Postgres: what is old and finished goes (with its children), what is open, recent
or part of a running session stays, `0` keeps everything, and only one replica sweeps at a time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import load_settings
from app.db import raw
from app.db.session import create_engine
from app.retention.purge import Swept
from app.retention.service import LOCK_KEY, Retention, exclusive
from tests.support.polling import eventually_async

DAY = 86400


@pytest.fixture
async def engine(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url, pool_size=3)
    yield engine
    await engine.dispose()


def retention(engine: AsyncEngine, url: str, **settings: Any) -> Retention:
    values = {"retention_tasks": "7d", "retention_sessions": "7d", "retention_agents": "7d", **settings}
    return Retention(settings=load_settings(database_url=url, retention_batch=2, **values), engine=engine)


async def task(
    engine: AsyncEngine,
    status: str,
    *,
    age: float,
    finished: float | None = None,
    session_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A task created ``age`` days ago (finished ``finished`` days ago), with an event and an assignment."""
    task_id = uuid.uuid4()
    async with raw.connection(engine) as db:
        await db.execute(
            "INSERT INTO tasks (id, type, required_capabilities, payload, status, max_attempts, timeout,"
            " queue_timeout, expires_at, created_at, finished_at, session_id, session_key)"
            " VALUES ($1, 't', '{x}', '{}', $2, 3, 60, 60, now(), now() - make_interval(days => $3),"
            " now() - make_interval(secs => $4 * 86400), $5, $6)",
            task_id, status, int(age), finished if finished is not None else None, session_id,
            str(task_id) if session_id else None,
        )  # fmt: skip
        if finished is None:
            await db.execute("UPDATE tasks SET finished_at = NULL WHERE id = $1", task_id)
        await db.execute("INSERT INTO task_events (task_id, kind) VALUES ($1, 'transition')", task_id)
        await db.execute(
            "INSERT INTO assignments (id, task_id, agent_id, model, replica_id, attempt, status)"
            " VALUES (gen_random_uuid(), $1, 'a', 'm', 'r', 1, 'succeeded')",
            task_id,
        )
    return task_id


async def session(engine: AsyncEngine, status: str, *, finished: float | None) -> uuid.UUID:
    session_id = uuid.uuid4()
    async with raw.connection(engine) as db:
        await db.execute(
            "INSERT INTO collab_sessions (id, strategy, spec, status, deadline, created_at, finished_at)"
            " VALUES ($1, 'chain', '{}', $2, now(), now() - interval '30 days',"
            " now() - make_interval(secs => $3 * 86400))",
            session_id, status, finished if finished is not None else 0.0,
        )  # fmt: skip
        if finished is None:
            await db.execute("UPDATE collab_sessions SET finished_at = NULL WHERE id = $1", session_id)
        await db.execute("INSERT INTO session_events (session_id, kind) VALUES ($1, 'created')", session_id)
    return session_id


async def agent(engine: AsyncEngine, status: str, *, seen: float) -> str:
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    async with raw.connection(engine) as db:
        await db.execute(
            "INSERT INTO agents (id, name, model, status, max_concurrency, last_seen_at, created_at)"
            " VALUES ($1, 'n', 'm', $2, 1, now() - make_interval(secs => $3 * 86400),"
            " now() - interval '30 days')",
            agent_id, status, seen,
        )  # fmt: skip
        await db.execute("INSERT INTO agent_capabilities (agent_id, name) VALUES ($1, 'x')", agent_id)
        await db.execute("INSERT INTO agent_health_checks (agent_id, ok) VALUES ($1, true)", agent_id)
    return agent_id


async def ids(engine: AsyncEngine, table: str) -> set[Any]:
    async with raw.connection(engine) as db:
        return {row[0] for row in await db.fetch(f"SELECT id FROM {table}")}


async def count(engine: AsyncEngine, sql: str) -> int:
    async with raw.connection(engine) as db:
        return int(await db.fetchval(sql))


async def test_old_finished_work_goes_and_everything_else_stays(
    engine: AsyncEngine, fresh_database_url: str
) -> None:
    old_done = [
        await task(engine, status, age=10, finished=8)
        for status in ("succeeded", "failed", "cancelled", "timed_out", "succeeded")
    ]
    kept = {
        await task(engine, "succeeded", age=10, finished=1),  # finished recently
        await task(engine, "pending", age=30),  # old but still open
        await task(engine, "running", age=30),
    }
    running = await session(engine, "running", finished=None)
    kept |= {  # a running session's subtasks stay, however old
        await task(engine, "succeeded", age=30, finished=20, session_id=running),
        await task(engine, "pending", age=30, session_id=running),
    }
    recent = await session(engine, "succeeded", finished=1)
    kept.add(await task(engine, "succeeded", age=10, finished=8, session_id=recent))
    expired = await session(engine, "failed", finished=8)
    for status in ("succeeded", "cancelled", "failed"):
        await task(engine, status, age=10, finished=9, session_id=expired)
    gone_agent = await agent(engine, "offline", seen=8)
    kept_agents = {
        await agent(engine, "offline", seen=1),
        await agent(engine, "active", seen=8),
    }

    swept = await retention(engine, fresh_database_url).sweep_once()

    assert swept == Swept(tasks=5, sessions=1, session_tasks=3, agents=1)  # in batches of 2
    assert await ids(engine, "tasks") == kept
    assert await ids(engine, "collab_sessions") == {running, recent}
    assert await ids(engine, "agents") == kept_agents
    assert gone_agent not in await ids(engine, "agents")
    # Children went with their parents (cascades), and only theirs.
    assert await count(engine, "SELECT count(*) FROM task_events") == len(kept)
    assert await count(engine, "SELECT count(*) FROM assignments") == len(kept)
    assert await count(engine, "SELECT count(*) FROM session_events") == 2
    assert await count(engine, "SELECT count(*) FROM agent_health_checks") == 2
    assert await count(engine, "SELECT count(*) FROM agent_capabilities") == 2
    assert not set(old_done) & await ids(engine, "tasks")
    # A second sweep finds nothing more to do.
    assert await retention(engine, fresh_database_url).sweep_once() == Swept()


async def test_zero_keeps_everything(engine: AsyncEngine, fresh_database_url: str) -> None:
    done = await task(engine, "succeeded", age=400, finished=399)
    finished = await session(engine, "succeeded", finished=399)
    subtask = await task(engine, "succeeded", age=400, finished=399, session_id=finished)
    offline = await agent(engine, "offline", seen=399)
    keep_all = retention(
        engine, fresh_database_url, retention_tasks="0", retention_sessions="0s", retention_agents=0
    )
    assert not keep_all.enabled
    assert await keep_all.sweep_once() == Swept()
    # Each kind has its own setting: sessions alone take their subtasks, and leave other tasks alone.
    sessions_only = retention(
        engine, fresh_database_url, retention_tasks="0", retention_sessions="7d", retention_agents="0"
    )
    assert await sessions_only.sweep_once() == Swept(sessions=1, session_tasks=1)
    assert await ids(engine, "tasks") == {done}
    assert subtask not in await ids(engine, "tasks")
    assert await ids(engine, "agents") == {offline}


# This database's retention lock, if anyone holds it (a bigint key shows as two 32-bit halves).
HELD = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND classid = {LOCK_KEY >> 32} AND objid = {LOCK_KEY & 0xFFFFFFFF} AND objsubid = 1"
)


async def test_one_replica_sweeps_at_a_time(engine: AsyncEngine, fresh_database_url: str) -> None:
    old = await task(engine, "succeeded", age=10, finished=8)
    first, second = retention(engine, fresh_database_url), retention(engine, fresh_database_url)
    async with exclusive(engine) as holder:  # the first replica is mid-sweep
        assert holder is not None
        assert await count(engine, HELD) == 1
        assert await second.sweep_once() is None  # the second skips the round, touching nothing
        assert old in await ids(engine, "tasks")
    assert await count(engine, HELD) == 0
    assert await first.sweep_once() == Swept(tasks=1)


async def _interrupted_sweep(engine: AsyncEngine) -> None:
    async with exclusive(engine) as db:
        assert db is not None
        raise RuntimeError("the replica is stopping")


async def test_a_sweep_interrupted_midway_releases_the_lock(
    engine: AsyncEngine, fresh_database_url: str
) -> None:
    with pytest.raises(RuntimeError):
        await _interrupted_sweep(engine)
    assert await count(engine, HELD) == 0
    assert await retention(engine, fresh_database_url).sweep_once() == Swept()


async def test_the_service_sweeps_on_its_schedule(engine: AsyncEngine, fresh_database_url: str) -> None:
    old = await task(engine, "succeeded", age=10, finished=8)
    kept = await task(engine, "pending", age=10)
    service = retention(engine, fresh_database_url, retention_interval="50ms")
    await service.start()
    try:
        await eventually_async(lambda: _gone(engine, old))
    finally:
        await service.stop()
    assert await ids(engine, "tasks") == {kept}


async def _gone(engine: AsyncEngine, task_id: uuid.UUID) -> bool:
    await asyncio.sleep(0)
    return task_id not in await ids(engine, "tasks")
