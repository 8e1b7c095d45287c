"""The ORM models and the migrated schema never drift apart."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, Text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.base import Base
from app.db.migrate import head_revision


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
