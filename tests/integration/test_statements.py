"""Every SQL statement the hot paths send as text is prepared against the migrated schema, so a renamed column
or a mistyped cast fails here in a second rather than in a slow end-to-end run; and the task view maps every
field of the response model to a column."""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import cast

import asyncpg
import pytest
from sqlalchemy import Table

from app.db import raw
from app.db.models import Task
from app.tasks import service, submit
from app.tasks.rows import AssignmentRow, TaskRow, TrackedRow
from app.tasks.schemas import TaskOut
from tests.support import sql

# The modules whose statements are text (app/db/raw.py: the per-task paths run on asyncpg directly).
MODULES = (
    "app.tasks.service",
    "app.tasks.submit",
    "app.tasks.lifecycle",
    "app.tasks.work",
    "app.tasks.recovery",
    "app.retention.purge",
    "app.agents.service",
    "app.agents.registrar",
    "app.replicas.reconcile",
    "app.runtime",
)
_SQL = re.compile(r"^\s*(WITH|SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


def statements() -> Iterator[tuple[str, str]]:
    for name in MODULES:
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            constant = attribute.lstrip("_").isupper()
            if constant and isinstance(value, str) and _SQL.match(value):
                yield f"{name}.{attribute}", value
    for row in (TaskRow, AssignmentRow):
        yield f"{row.__name__}.select", row.select()
        yield f"{row.__name__}.update", _update_of_every_written_column(row)


def _update_of_every_written_column(row: type[TrackedRow]) -> str:
    written = sorted(name for name in row.__annotations__ if name in row.table.c and name != "id")
    return raw.update_from_unnest(row.table, "id", written)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await sql.connect(database_url)
    yield connection
    await connection.close()


def test_the_scan_finds_the_hot_statements() -> None:
    found = dict(statements())
    assert "app.tasks.submit._INSERT_TASKS" in found
    assert "app.tasks.lifecycle._CLAIM" in found
    assert "app.tasks.lifecycle._LEASE" in found
    assert len(found) >= 15


@pytest.mark.parametrize(("name", "sql"), list(statements()), ids=[name for name, _ in statements()])
async def test_every_statement_prepares_against_the_migrated_schema(
    db: asyncpg.Connection, name: str, sql: str
) -> None:
    await db.prepare(sql)  # parses, resolves every table, column and cast: a drifted name raises here


async def test_a_renamed_column_fails_to_prepare(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.UndefinedColumnError):
        await db.prepare(submit._INSERT_TASKS.replace("idempotency_key", "idempotency"))


def test_every_field_of_the_task_view_is_a_column() -> None:
    columns = cast(Table, Task.__table__).c
    mapped = dict(service._COLUMNS)
    assert set(mapped) | {"usage", "waiting"} == set(TaskOut.model_fields)
    assert [name for name, column in mapped.items() if column not in columns] == []
    assert all(name in columns for name in service._USAGE)
