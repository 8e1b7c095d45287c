"""The ownership migration on a database that already holds work: old rows get no owner, so only admins see
them, and their idempotency keys keep working for unowned submissions without blocking anyone else's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.collab import service as sessions
from app.config import Settings, load_settings
from app.db import raw
from app.db.migrate import alembic_config
from app.db.session import create_engine, create_sessionmaker, engine_of
from app.errors import SessionNotFound, TaskNotFound
from app.ownership import NOBODY, Owner
from app.security import ENV_ADMIN, Principal, Scope
from app.tasks import service as tasks
from app.tasks.intake import Intake
from app.tasks.schemas import TaskCreate, TaskOut
from app.tasks.submit import row_of
from tests.support import postgres as test_postgres
from tests.support import sql

LEGACY_TASK = uuid.UUID("00000000-0000-4000-8000-000000000001")
LEGACY_SESSION = uuid.UUID("00000000-0000-4000-8000-000000000002")


@pytest.fixture
def legacy_url(postgres: test_postgres.TestPostgres) -> Iterator[str]:
    """A database at the revision before ownership, with a task, a session and a key written by it."""
    name = f"t_legacy_{uuid.uuid4().hex[:12]}"
    postgres.execute_autocommit(f'CREATE DATABASE "{name}"')
    url = postgres.url_for(name)
    command.upgrade(alembic_config(url), "0001_initial")
    yield url
    postgres.drop_database(name)


async def _write_legacy_rows(url: str) -> None:
    conn = await sql.connect(url)
    try:
        await conn.execute(
            "INSERT INTO tasks (id, type, required_capabilities, payload, status, max_attempts, timeout,"
            " queue_timeout, expires_at, idempotency_key)"
            " VALUES ($1, 'old', '{x}', '{}', 'succeeded', 3, 60, 60, now(), 'order-1')",
            LEGACY_TASK,
        )
        await conn.execute(
            "INSERT INTO collab_sessions (id, strategy, spec, status, deadline)"
            " VALUES ($1, 'chain', '{}', 'succeeded', now())",
            LEGACY_SESSION,
        )
        await conn.execute(
            "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes)"
            " VALUES (gen_random_uuid(), 'old', 'ap_x', 'h', '{client}')"
        )
    finally:
        await conn.close()


@pytest.fixture
async def maker(legacy_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await _write_legacy_rows(legacy_url)
    # Alembic's env runs its own event loop: in a thread, as the server's start does.
    await asyncio.to_thread(command.upgrade, alembic_config(legacy_url), "head")
    engine = create_engine(legacy_url, pool_size=2)
    yield create_sessionmaker(engine)
    await engine.dispose()


def client(project: str | None = None) -> Principal:
    return Principal(key_id=uuid.uuid4(), name="c", scopes=frozenset({Scope.CLIENT}), project=project)


async def test_rows_from_before_ownership_are_seen_by_admins_only(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    admin = Principal(key_id=uuid.uuid4(), name="a", scopes=frozenset({Scope.ADMIN}))
    async with maker() as db:
        for viewer in (admin, ENV_ADMIN):
            assert (await tasks.get_task(db, LEGACY_TASK, viewer=viewer)).owner_key_id is None
            assert (await sessions.get_session(db, LEGACY_SESSION, viewer=viewer)).project is None
            listed, _ = await tasks.list_tasks(
                db, viewer=viewer, status=None, task_type=None, agent_id=None, session_id=None,
                cursor=None, limit=10,
            )  # fmt: skip
            assert [task.id for task in listed] == [LEGACY_TASK]
        for viewer in (client(), client("team")):
            with pytest.raises(TaskNotFound):
                await tasks.get_task(db, LEGACY_TASK, viewer=viewer)
            with pytest.raises(SessionNotFound):
                await sessions.get_session(db, LEGACY_SESSION, viewer=viewer)
            listed, _ = await tasks.list_tasks(
                db, viewer=viewer, status=None, task_type=None, agent_id=None, session_id=None,
                cursor=None, limit=10,
            )  # fmt: skip
            assert listed == []


async def test_an_old_idempotency_key_is_the_unowned_ones_only(
    maker: async_sessionmaker[AsyncSession], legacy_url: str
) -> None:
    settings: Settings = load_settings(database_url=legacy_url)
    spec = TaskCreate(type="new", capabilities=["x"], idempotency_key="order-1")
    engine = engine_of(maker)
    intake = Intake(engine=engine, settings=settings)

    async def submit(owner: Owner) -> tuple[TaskOut, bool]:
        row = row_of(spec, settings, owner=owner, session_id=None, session_key=None)
        return await intake.submit(row)

    # The environment's admin key submits without an owner, as every submission did before: the same task.
    task, created = await submit(NOBODY)
    assert (task.id, created) == (LEGACY_TASK, False)
    # A client key reusing the key gets a task of its own, and keeps getting that one.
    owner = Owner(key_id=uuid.uuid4(), project=None)
    fresh, created = await submit(owner)
    assert created
    assert fresh.id != LEGACY_TASK
    again, created = await submit(owner)
    assert (again.id, created) == (fresh.id, False)
    await intake.stop()
    async with raw.connection(engine) as db:
        row = await db.fetchrow("SELECT owner_key_id, project FROM tasks WHERE id = $1", fresh.id)
        assert (row["owner_key_id"], row["project"]) == (owner.key_id, None)
        assert await db.fetchval("SELECT project FROM api_keys") is None
