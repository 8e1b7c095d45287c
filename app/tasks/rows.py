"""Tasks and assignments as the hot paths hold them: plain rows that remember what was assigned to them.

Loading ORM objects and flushing them through the unit of work was over half the server's CPU under load.
These rows are read with one SELECT per table and written back with one ``UPDATE ... FROM unnest(...)`` per
set of changed columns, on asyncpg directly (app.db.raw).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, cast

from sqlalchemy import Table

from app.db import raw
from app.db.models import Assignment, Task


class TrackedRow:
    """Attributes from a SELECT; every assignment afterwards is remembered for the UPDATE."""

    table: ClassVar[Table]
    loaded: ClassVar[tuple[str, ...]]
    extra: ClassVar[str] = ""  # more expressions for the SELECT list
    _statements: ClassVar[dict[tuple[str, ...], str]]

    def __init__(self, values: Any) -> None:
        object.__setattr__(self, "changes", {})
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        self.changes[name] = value
        object.__setattr__(self, name, value)

    changes: dict[str, Any]

    @classmethod
    def select(cls) -> str:
        """``SELECT <loaded columns> FROM <table>``: add WHERE, ORDER BY and FOR UPDATE to taste."""
        return f"SELECT {', '.join(cls.loaded)}{cls.extra} FROM {cls.table.name}"

    @classmethod
    def _update(cls, names: tuple[str, ...]) -> str:
        statement = cls._statements.get(names)
        if statement is None:
            statement = cls._statements[names] = raw.update_from_unnest(cls.table, "id", names)
        return statement

    @classmethod
    async def write(cls, db: raw.Driver, rows: Sequence[TrackedRow]) -> None:
        """One UPDATE per distinct set of changed columns."""
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for row in rows:
            if not row.changes:
                continue
            names = tuple(sorted(row.changes))
            groups.setdefault(names, []).append([row.id, *(row.changes[name] for name in names)])
            row.changes.clear()
        for names, batch in groups.items():
            await db.execute(cls._update(names), *raw.columns_of(cls.table, ("id", *names), batch))

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
    loaded = ("id", "task_id", "agent_id", "replica_id", "status", "assigned_at", "started_at")
    extra = ", (output IS NULL AND error IS NULL) AS blank"
    _statements = {}

    task_id: uuid.UUID
    agent_id: str
    replica_id: str  # the replica the lease is held through (a hand-over moves it)
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
