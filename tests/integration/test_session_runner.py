"""The session runner against real Postgres: resume from the database alone, exactly-once steps, locks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.collab import service
from app.collab.runner import SessionRunner
from app.collab.schemas import SessionCreate, SessionOut
from app.config import Settings, load_settings
from app.db.models import CollabSession, SessionEvent, Task
from app.db.session import create_engine, create_sessionmaker
from app.metrics import Metrics
from app.ownership import NOBODY
from app.signals import Signals

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(database_url=database_url, map_reduce_max_parallel=2)


@pytest.fixture
async def maker(database_url: str) -> AsyncIterator[Maker]:
    engine = create_engine(database_url, pool_size=4)
    yield create_sessionmaker(engine)
    await engine.dispose()


def runner(settings: Settings, maker: Maker, metrics: Metrics | None = None) -> SessionRunner:
    """A runner as a freshly started (or restarted) server builds it: it knows only the database."""
    return SessionRunner(
        settings=settings, sessionmaker=maker, signals=Signals(), metrics=metrics or Metrics()
    )


async def create(maker: Maker, settings: Settings, **overrides: Any) -> SessionOut:
    body: dict[str, Any] = {
        "strategy": "map_reduce",
        "task": {"type": "count", "capabilities": ["text"], "payload": {"items": [1, 2, 3, 4, 5]}},
        "params": {"split_field": "items", "chunk_size": 2, "reducer": "sum"},
        **overrides,
    }
    async with maker() as db:
        return await service.create_session(
            db,
            settings,
            SessionCreate.model_validate(body),
            owner=NOBODY,
            signals=Signals(),
            metrics=Metrics(),
        )


async def finish(maker: Maker, session_id: uuid.UUID, key: str, output: Any, cost: float = 0.0) -> None:
    """What the gateway does when an agent's result arrives, reduced to the columns a session reads."""
    async with maker() as db:
        await db.execute(
            update(Task)
            .where(Task.session_id == session_id, Task.session_key == key)
            .values(status="succeeded", result=output, cost=cost, finished_at=func.now())
        )
        await db.commit()


async def view(maker: Maker, session_id: uuid.UUID) -> SessionOut:
    async with maker() as db:
        return await service.session_view(db, session_id)


async def kinds(maker: Maker, session_id: uuid.UUID) -> list[str]:
    async with maker() as db:
        query = (
            select(SessionEvent.kind).where(SessionEvent.session_id == session_id).order_by(SessionEvent.id)
        )
        return list(await db.scalars(query))


async def test_create_takes_the_first_step_and_a_new_runner_finishes_from_the_database(
    settings: Settings, maker: Maker
) -> None:
    created = await create(maker, settings)
    assert created.subtasks is not None
    assert [s.key for s in created.subtasks] == ["map-0", "map-1"]  # max_parallel 2

    await finish(maker, created.id, "map-0", 3)
    assert await runner(settings, maker).step(created.id)
    await finish(maker, created.id, "map-1", 7)
    await finish(maker, created.id, "map-2", 5)
    metrics = Metrics()
    assert await runner(settings, maker, metrics).step(created.id)

    done = await view(maker, created.id)
    assert (done.status, done.result) == ("succeeded", 15)
    assert [s.key for s in done.subtasks or []] == ["map-0", "map-1", "map-2"]
    assert metrics.sessions_finished.labels("map_reduce", "succeeded")._value.get() == 1
    assert await kinds(maker, created.id) == [
        "created",
        *["subtask_submitted"] * 2,
        "subtask_finished",
        "subtask_submitted",
        *["subtask_finished"] * 2,
        "finished",
    ]


async def version(maker: Maker, session_id: uuid.UUID) -> int:
    async with maker() as db:
        found = await db.scalar(select(CollabSession.version).where(CollabSession.id == session_id))
        assert found is not None
        return found


async def test_a_step_with_nothing_new_changes_nothing(settings: Settings, maker: Maker) -> None:
    created = await create(maker, settings)
    before = await kinds(maker, created.id), await version(maker, created.id)
    assert not await runner(settings, maker).step(created.id)
    assert (await kinds(maker, created.id), await version(maker, created.id)) == before


async def test_a_session_locked_elsewhere_is_skipped_not_waited_for(settings: Settings, maker: Maker) -> None:
    created = await create(maker, settings)
    await finish(maker, created.id, "map-0", 1)
    async with maker() as other:
        await other.execute(
            text("SELECT 1 FROM collab_sessions WHERE id = :id FOR UPDATE"), {"id": created.id}
        )
        assert not await asyncio.wait_for(runner(settings, maker).step(created.id), 5)
        await other.rollback()
    assert await runner(settings, maker).step(created.id)


async def test_two_runners_at_once_take_each_step_once(settings: Settings, maker: Maker) -> None:
    created = await create(maker, settings)
    await finish(maker, created.id, "map-0", 1)
    first, second = runner(settings, maker), runner(settings, maker)
    await asyncio.gather(*(r.step(created.id) for r in (first, second, first, second)))
    events = await kinds(maker, created.id)
    assert events.count("subtask_finished") == 1
    assert events.count("subtask_submitted") == 3


async def test_budget_reached_fails_the_session_and_cancels_open_subtasks(
    settings: Settings, maker: Maker
) -> None:
    created = await create(maker, settings, budget={"max_cost": 0.5})
    await finish(maker, created.id, "map-0", 1, cost=0.6)
    assert await runner(settings, maker).step(created.id)
    done = await view(maker, created.id)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["code"] == "budget_exceeded"
    assert {s.key: s.status for s in done.subtasks or []} == {"map-0": "succeeded", "map-1": "cancelled"}
    assert done.cost == pytest.approx(0.6)


async def test_a_session_past_its_deadline_times_out(settings: Settings, maker: Maker) -> None:
    created = await create(maker, settings)
    async with maker() as db:
        await db.execute(
            update(CollabSession)
            .where(CollabSession.id == created.id)
            .values(deadline=func.now() - timedelta(seconds=1))
        )
        await db.commit()
    assert await runner(settings, maker).step(created.id)
    done = await view(maker, created.id)
    assert done.error is not None
    assert done.error["code"] == "timed_out"
    assert {s.status for s in done.subtasks or []} == {"cancelled"}


async def test_run_once_steps_every_running_session(settings: Settings, maker: Maker) -> None:
    sessions = [await create(maker, settings) for _ in range(3)]
    for created in sessions:
        await finish(maker, created.id, "map-0", 1)
    assert await runner(settings, maker).run_once() >= 3
    for created in sessions:
        assert [s.key for s in (await view(maker, created.id)).subtasks or []][-1] == "map-2"
