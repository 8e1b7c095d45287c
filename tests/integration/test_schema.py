"""The ORM models and the migrated schema never drift apart."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, Text, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.base import Base
from app.db.migrate import head_revision
from app.statuses import AgentStatus, AssignmentStatus, SessionStatus, TaskStatus


async def _diff(database_url: str, metadata: MetaData) -> list[Any]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:

            def compare(sync_conn: Any) -> list[Any]:
                context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(context, metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def test_models_match_the_migrated_schema(database_url: str) -> None:
    assert await _diff(database_url, Base.metadata) == []


async def test_the_drift_check_sees_a_column_added_without_a_migration(database_url: str) -> None:
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["agents"].append_column(Column("nickname", Text))
    diff = await _diff(database_url, drifted)
    assert any(op[0] == "add_column" and op[3].name == "nickname" for op in diff)


def test_there_is_one_head() -> None:
    assert head_revision() is not None


async def test_every_status_column_refuses_a_value_outside_its_enum(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE contype = 'c' AND conname LIKE 'ck_%_status'"
                )
            )
            checks = dict(rows.tuples().all())
    finally:
        await engine.dispose()
    enums = {
        "tasks": TaskStatus,
        "assignments": AssignmentStatus,
        "agents": AgentStatus,
        "collab_sessions": SessionStatus,
    }
    assert set(checks) == set(enums)
    for table, enum in enums.items():
        # The migrated constraint admits exactly the enum's values: no more, no fewer.
        admitted = {part.split("'")[1] for part in checks[table].split("ARRAY[")[1].split(",")}
        assert admitted == {member.value for member in enum}, table
