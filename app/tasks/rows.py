"""Tasks and assignments as the hot paths hold them: plain rows that remember what was assigned to them.

Loading ORM objects and flushing them through the unit of work was over half the server's CPU under load.
These rows are read with one Core SELECT per table and written back with one executemany UPDATE per set
of changed columns, both compiled once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, cast

from sqlalchemy import ColumnElement, Select, Table, Update, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Assignment, Task


class TrackedRow:
    """Attributes from a SELECT; every assignment afterwards is remembered for the UPDATE."""

    table: ClassVar[Table]
    loaded: ClassVar[tuple[str, ...]]
    _statements: ClassVar[dict[tuple[str, ...], Update]]

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "changes", {})
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        self.changes[name] = value
        object.__setattr__(self, name, value)

    changes: dict[str, Any]

    @classmethod
    def columns(cls) -> list[ColumnElement[Any]]:
        return [cls.table.c[name] for name in cls.loaded]

    @classmethod
    def select(cls) -> Select[Any]:
        return select(*cls.columns())

    @classmethod
    def _update(cls, names: tuple[str, ...]) -> Update:
        statement = cls._statements.get(names)
        if statement is None:
            table = cls.table
            statement = (
                update(table)
                .where(table.c.id == bindparam("row_id", type_=table.c.id.type))
                .values({name: bindparam(f"v_{name}", type_=table.c[name].type) for name in names})
            )
            cls._statements[names] = statement
        return statement

    @classmethod
    async def write(cls, session: AsyncSession, rows: Sequence[TrackedRow]) -> None:
        """One executemany per distinct set of changed columns, rows in id order."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in sorted(rows, key=lambda r: r.id):
            if not row.changes:
                continue
            names = tuple(sorted(row.changes))
            params = {f"v_{name}": row.changes[name] for name in names}
            params["row_id"] = row.id
            groups.setdefault(names, []).append(params)
            row.changes.clear()
        for names, batch in groups.items():
            await session.execute(cls._update(names), batch)

    id: uuid.UUID


class TaskRow(TrackedRow):
    table = cast(Table, Task.__table__)
    loaded = (
        "id", "type", "status", "attempt", "max_attempts", "timeout", "queue_timeout", "assignment_id",
        "agent_id", "session_id", "max_cost", "input_tokens", "output_tokens", "cost",
    )  # fmt: skip
    _statements = {}

    type: str
    status: str
    attempt: int
    max_attempts: int
    timeout: float
    queue_timeout: float
    assignment_id: uuid.UUID | None
    agent_id: str | None
    session_id: uuid.UUID | None
    max_cost: float | None
    input_tokens: int
    output_tokens: int
    cost: float
    # Written, never read here:
    result: Any
    error: dict[str, Any] | None
    lease_expires_at: datetime | None
    available_at: datetime
    expires_at: datetime
    finished_at: datetime | None
    updated_at: datetime


class AssignmentRow(TrackedRow):
    table = cast(Table, Assignment.__table__)
    loaded = ("id", "task_id", "agent_id", "status", "assigned_at", "started_at")
    _statements = {}

    task_id: uuid.UUID
    agent_id: str
    status: str
    assigned_at: datetime
    started_at: datetime | None
    blank: bool  # no output or error recorded yet (read, never written)
    # Written, never read here:
    finished_at: datetime | None
    latency_ms: float | None
    input_tokens: int
    output_tokens: int
    cost: float
    output: Any
    error: dict[str, Any] | None
    reason: str | None

    @classmethod
    def select(cls) -> Select[Any]:
        table = cls.table
        blank = (table.c.output.is_(None) & table.c.error.is_(None)).label("blank")
        return select(*cls.columns(), blank)
