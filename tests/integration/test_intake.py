"""Group commit for single submits, against real Postgres: concurrent requests share one statement, each
still gets its own task, a repeated idempotency key gets the first's, and one bad row fails only itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings, load_settings
from app.db.session import create_engine
from app.ownership import NOBODY
from app.tasks import submit
from app.tasks.intake import Intake
from app.tasks.schemas import TaskCreate
from tests.support import sql


@pytest.fixture
async def engine(fresh_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def intakes() -> AsyncIterator[list[Intake]]:
    made: list[Intake] = []
    yield made
    for intake in made:
        await intake.stop()  # gives back the connection its writer holds


def row(settings: Settings, index: int, key: str | None = None) -> dict[str, object]:
    spec = TaskCreate(type="echo", capabilities=["echo"], payload={"i": index}, idempotency_key=key)
    return submit.row_of(spec, settings, owner=NOBODY, session_id=None, session_key=None)


async def test_concurrent_submits_share_one_statement(
    engine: AsyncEngine, fresh_database_url: str, intakes: list[Intake]
) -> None:
    settings = load_settings(database_url=fresh_database_url)
    intake = Intake(engine=engine, settings=settings)
    intakes.append(intake)
    results = await asyncio.gather(*(intake.submit(row(settings, i)) for i in range(40)))
    assert [created for _, created in results] == [True] * 40
    assert [task.payload for task, _ in results] == [{"i": i} for i in range(40)]
    assert len({task.id for task, _ in results}) == 40
    assert (intake.statements, intake.rows) == (1, 40)
    # A lone submit afterwards is written at once, in a statement of its own.
    task, created = await intake.submit(row(settings, 99))
    assert created
    assert task.status == "pending"
    assert intake.statements == 2


async def test_a_repeated_key_in_one_statement_gets_the_first_task(
    engine: AsyncEngine, fresh_database_url: str, intakes: list[Intake]
) -> None:
    settings = load_settings(database_url=fresh_database_url)
    intake = Intake(engine=engine, settings=settings)
    intakes.append(intake)
    results = await asyncio.gather(*(intake.submit(row(settings, i, key="same")) for i in range(10)))
    assert sum(created for _, created in results) == 1
    assert len({task.id for task, _ in results}) == 1
    assert intake.statements == 1


async def test_one_bad_row_fails_only_its_own_request(
    engine: AsyncEngine, fresh_database_url: str, intakes: list[Intake]
) -> None:
    settings = load_settings(database_url=fresh_database_url)
    intake = Intake(engine=engine, settings=settings)
    intakes.append(intake)
    bad = row(settings, 0) | {"type": None}  # NOT NULL: the coalesced statement fails as a whole
    outcomes = await asyncio.gather(
        intake.submit(row(settings, 1)), intake.submit(bad), intake.submit(row(settings, 2)),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(outcomes[1], asyncpg.NotNullViolationError)
    first, _, third = outcomes
    assert not isinstance(first, BaseException)
    assert not isinstance(third, BaseException)
    assert (first[0].payload, third[0].payload) == ({"i": 1}, {"i": 2})


async def test_a_failure_after_the_statement_answers_the_rows_it_wrote(
    engine: AsyncEngine, fresh_database_url: str, intakes: list[Intake], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement wrote the new row; reading back the task a repeated key names then failed (a dropped
    connection, say). The new row's request gets its task, not a conflict that would make its client submit
    it again; the repeated key's request is retried alone and gets the first task."""
    settings = load_settings(database_url=fresh_database_url)
    intake = Intake(engine=engine, settings=settings)
    intakes.append(intake)
    first, _ = await intake.submit(row(settings, 0, key="once"))
    lookups = 0
    real = submit._existing_or_created

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal lookups
        lookups += 1
        if lookups == 1:
            raise ConnectionResetError("connection lost while reading back")
        return await real(*args, **kwargs)

    monkeypatch.setattr(submit, "_existing_or_created", flaky)
    fresh, repeated = await asyncio.gather(
        intake.submit(row(settings, 1)), intake.submit(row(settings, 2, key="once"))
    )
    assert fresh[1] is True
    assert fresh[0].payload == {"i": 1}
    assert (repeated[0].id, repeated[1]) == (first.id, False)
    count = await sql.fetchval(fresh_database_url, "SELECT count(*) FROM tasks")
    assert count == 2  # nothing written twice
