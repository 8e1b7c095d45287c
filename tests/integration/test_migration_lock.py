"""Replicas starting together all run the migrations: under the lock one migrates and the others find the
schema at head, instead of racing to create the same tables. Each "replica" is a process of its own (Alembic's
context is global to a process), and all ask for the upgrade at the same moment."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier

import pytest

from app.db.migrate import head_revision, upgrade_to_head
from tests.support import sql
from tests.support.postgres import TestPostgres as Postgres

STARTERS = 4


def _start(url: str, barrier: Barrier, failures: multiprocessing.SimpleQueue[str]) -> None:
    barrier.wait()
    try:
        upgrade_to_head(url)
    except Exception as exc:
        failures.put(f"{type(exc).__name__}: {exc}"[:500])


@pytest.fixture
def empty_database_url(postgres: Postgres) -> Iterator[str]:
    """A database with nothing in it (the suite's fresh databases are clones of a migrated template)."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    postgres.execute_autocommit(f'CREATE DATABASE "{name}"')
    yield postgres.url_for(name)
    postgres.drop_database(name)


async def test_concurrent_upgrades_of_an_empty_database_all_succeed(empty_database_url: str) -> None:
    fresh_database_url = empty_database_url
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(STARTERS)
    failures: multiprocessing.SimpleQueue[str] = context.SimpleQueue()
    processes = [
        context.Process(target=_start, args=(fresh_database_url, barrier, failures)) for _ in range(STARTERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    reported = []
    while not failures.empty():
        reported.append(failures.get())
    assert reported == []
    assert [process.exitcode for process in processes] == [0] * STARTERS
    connection = await sql.connect(fresh_database_url)
    try:
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == head_revision()
    finally:
        await connection.close()
