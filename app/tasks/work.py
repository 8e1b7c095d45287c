"""A unit of work over tasks and assignments: rows locked in one order, writes batched until flush.

Lock order is always tasks, then assignments, then agents, each sorted by id, in every transaction that
touches them (results, requeues, cancels, the reaper), so concurrent transactions never deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Agent, TaskEvent
from app.tasks.rows import AssignmentRow, TaskRow
from app.tasks.service import notify


@dataclass
class Finished:
    """A task that left an agent: for metrics, waiters and the dispatcher's capacity count."""

    task_id: uuid.UUID
    task_type: str
    agent_id: str
    status: str  # the task's new status (pending when it went back to the queue; superseded: ignored)
    assignment_id: uuid.UUID | None = None
    duration_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    retried: bool = False
    rejected: bool = False
    executed: bool = False  # the agent ran it and reported back (counts toward execution time)
    in_session: bool = False  # a collaboration session's subtask: its runner may have a step to take


@dataclass
class Outcome:
    ack: bool = False  # acknowledge the agent's frame (its result is durable)
    error: str | None = None  # an `error` frame's message (unknown_assignment)
    finished: list[Finished] = field(default_factory=list)

    def merge(self, other: Outcome) -> Outcome:
        self.finished.extend(other.finished)
        return self


@dataclass
class AgentTally:
    completed: int = 0
    failed: int = 0
    latency_ms: float = 0.0
    tokens: int = 0
    cost: float = 0.0


_agents = cast(Table, Agent.__table__)
_done = _agents.c.tasks_completed + _agents.c.tasks_failed
# A plain executemany (Core, not ORM bulk): a batch's agent counters in one round trip.
_TALLY = (
    update(_agents)
    .where(_agents.c.id == bindparam("agent"))
    .values(
        tasks_completed=_agents.c.tasks_completed + bindparam("ok"),
        tasks_failed=_agents.c.tasks_failed + bindparam("bad"),
        avg_latency_ms=(_agents.c.avg_latency_ms * _done + bindparam("ms"))
        / (_done + bindparam("ok") + bindparam("bad")),
        tokens_processed=_agents.c.tokens_processed + bindparam("tokens"),
        cost_incurred=_agents.c.cost_incurred + bindparam("cost"),
    )
)


async def db_now(session: AsyncSession) -> datetime:
    """The transaction's timestamp: every replica measures leases by the database's clock."""
    now: datetime | None = await session.scalar(select(func.now()))
    assert now is not None
    return now


_INSERT_EVENTS = insert(cast(Table, TaskEvent.__table__))


class Work:
    def __init__(self, session: AsyncSession, now: datetime) -> None:
        self.session = session
        self.now = now
        self.tasks: dict[uuid.UUID, TaskRow] = {}
        self.assignments: dict[uuid.UUID, AssignmentRow] = {}
        self.events: list[dict[str, Any]] = []
        self.tallies: dict[str, AgentTally] = {}
        self.wake = False

    @classmethod
    async def begin(cls, session: AsyncSession) -> Work:
        return cls(session, await db_now(session))

    async def lock_tasks(self, query: Select[Any]) -> list[TaskRow]:
        """Load (and, as the query says, lock) tasks selected by a query over TaskRow.select()."""
        rows = [TaskRow(dict(row._mapping)) for row in await self.session.execute(query)]
        self.tasks.update({row.id: row for row in rows})
        return rows

    async def lock(self, assignment_ids: Iterable[uuid.UUID]) -> None:
        """Lock the assignments and their tasks (tasks first) for the rest of the transaction."""
        ids = sorted(set(assignment_ids) - set(self.assignments))
        if not ids:
            return
        assignments = AssignmentRow.table
        task_ids = set(
            await self.session.scalars(select(assignments.c.task_id).where(assignments.c.id.in_(ids)))
        )
        missing = sorted(task_ids - set(self.tasks))
        if missing:
            tasks = TaskRow.table
            await self.lock_tasks(
                TaskRow.select().where(tasks.c.id.in_(missing)).order_by(tasks.c.id).with_for_update()
            )
        rows = await self.session.execute(
            AssignmentRow.select()
            .where(assignments.c.id.in_(ids))
            .order_by(assignments.c.id)
            .with_for_update()
        )
        self.assignments.update({row.id: AssignmentRow(dict(row._mapping)) for row in rows})

    def owned(self, agent_id: str, assignment_id: uuid.UUID) -> AssignmentRow | None:
        """The agent's own assignment, locked; None for an unknown id or another agent's (agents cannot act
        on each other's work)."""
        assignment = self.assignments.get(assignment_id)
        return assignment if assignment is not None and assignment.agent_id == agent_id else None

    def current_task(self, assignment: AssignmentRow) -> TaskRow | None:
        """The task, if this assignment is still the one that holds it (the fence)."""
        task = self.tasks.get(assignment.task_id)
        if task is None or task.assignment_id != assignment.id or task.status not in ("assigned", "running"):
            return None
        return task

    def event(self, task: TaskRow, previous: str, reason: str, data: dict[str, Any] | None = None) -> None:
        self.events.append(
            {
                "task_id": task.id,
                "kind": "transition",
                "from_status": previous,
                "to_status": task.status,
                "reason": reason,
                "data": data,
            }
        )

    def progress_event(self, task_id: uuid.UUID, data: dict[str, Any]) -> None:
        self.events.append(
            {"task_id": task_id, "kind": "progress", "from_status": None, "to_status": None, "reason": None,
             "data": data}
        )  # fmt: skip

    def tally(self, agent_id: str, *, succeeded: bool, latency_ms: float, tokens: int, cost: float) -> None:
        tally = self.tallies.setdefault(agent_id, AgentTally())
        tally.completed += succeeded
        tally.failed += not succeeded
        tally.latency_ms += latency_ms
        tally.tokens += tokens
        tally.cost += cost

    async def flush(self) -> None:
        session = self.session
        await TaskRow.write(session, list(self.tasks.values()))
        await AssignmentRow.write(session, list(self.assignments.values()))
        if self.events:
            await session.execute(_INSERT_EVENTS, self.events)
            self.events = []
        if self.tallies:
            # One executemany for every agent in the batch, in id order (the lock order).
            rows = [
                {"agent": agent, "ok": t.completed, "bad": t.failed, "ms": t.latency_ms, "tokens": t.tokens,
                 "cost": t.cost}
                for agent, t in sorted(self.tallies.items())
            ]  # fmt: skip
            await session.execute(_TALLY, rows)
        self.tallies = {}
        if self.wake:
            await notify(session, {"k": "work"})
            self.wake = False
