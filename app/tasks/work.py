"""A unit of work over tasks and assignments: rows locked in one order, writes batched until flush.

Lock order is always tasks, then assignments, then agents, each sorted by id, in every transaction that
touches them (results, requeues, cancels, the reaper), so concurrent transactions never deadlock.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import raw
from app.db.models import Agent, TaskEvent
from app.storable import INT_MAX
from app.tasks.rows import AssignmentRow, TaskRow
from app.tasks.service import BUS_CHANNEL, NOTIFY_ALL, finished_messages
from app.tasks.states import TERMINAL

MAX_COST_TOTAL = 1e300  # a running cost stops growing here, far from double precision's overflow


def saturating_add(total: int, amount: int) -> int:
    """``total + amount`` for a BIGINT counter: stops at its maximum instead of overflowing."""
    return min(INT_MAX, total + amount)


def capped_cost(total: float, amount: float) -> float:
    """A running cost that stays finite (each result's cost is bounded; their sum must be too)."""
    return min(MAX_COST_TOTAL, total + amount)


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
    lapsed: bool = False  # its lease lapsed or the work was lost with the agent: a failure on its record


@dataclass(frozen=True, slots=True)
class Quarantine:
    """When lapses take an agent out of routing: ``after`` in a row (0: never), for ``cooldown`` seconds."""

    after: int = 3
    cooldown: float = 300.0

    @classmethod
    def of(cls, settings: Settings) -> Quarantine:
        return cls(settings.quarantine_after, settings.quarantine_cooldown)


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
_events = cast(Table, TaskEvent.__table__)
_EVENT_COLUMNS = ("task_id", "kind", "from_status", "to_status", "reason", "data")
_INSERT_EVENTS = raw.insert_from_unnest(_events, _EVENT_COLUMNS)
# A batch's tallies travel in the counters' own columns (and types); `avg_latency_ms` carries the batch's
# summed latency, which the UPDATE folds into the running average.
_TALLY_COLUMNS = (
    "id", "tasks_completed", "tasks_failed", "avg_latency_ms", "tokens_processed", "cost_incurred",
)  # fmt: skip
# The agents' rows are locked in id order first (the lock order), then updated from the batch's tallies.
# NO KEY UPDATE, as a plain UPDATE would take: FOR UPDATE would also conflict with the key-share locks that
# inserts referencing agents (health checks) take, in an order of their own.
_LOCK_AGENTS = "SELECT 1 FROM agents WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE"
# The counters saturate at BIGINT's maximum (and the cost at MAX_COST_TOTAL) instead of overflowing: a counter
# at its ceiling must not make every later result of its agent fail to commit.
_TALLY = f"""UPDATE agents AS t SET
    tasks_completed = t.tasks_completed + v.tasks_completed,
    tasks_failed = t.tasks_failed + v.tasks_failed,
    consecutive_lapses = CASE WHEN v.tasks_completed > 0 THEN 0 ELSE t.consecutive_lapses END,
    avg_latency_ms = (t.avg_latency_ms * (t.tasks_completed + t.tasks_failed) + v.avg_latency_ms)
        / (t.tasks_completed + t.tasks_failed + v.tasks_completed + v.tasks_failed),
    tokens_processed = CASE WHEN t.tokens_processed > {INT_MAX} - v.tokens_processed THEN {INT_MAX}
        ELSE t.tokens_processed + v.tokens_processed END,
    cost_incurred = LEAST(t.cost_incurred, {MAX_COST_TOTAL:.0e})
        + LEAST(v.cost_incurred, {MAX_COST_TOTAL:.0e})
FROM {raw.unnest(_agents, _TALLY_COLUMNS)} WHERE t.id = v.id"""
# Lapses (leases that lapsed, work lost with the agent) are failures on the agent's record, and enough of them
# in a row quarantine an active agent: routing skips it until quarantined_until (app.health.monitor lets it
# back) or an operator releases it. Returns the agents quarantined by this statement.
_LAPSES = f"""WITH v AS (SELECT * FROM unnest($1::text[], $2::int[]) AS v(id, n)),
prev AS (
    SELECT a.id, a.status, a.consecutive_lapses + 1 AS lapses, v.n FROM agents a JOIN v ON v.id = a.id
),
changed AS (
    UPDATE agents AS t SET tasks_failed = LEAST(t.tasks_failed + prev.n, {INT_MAX}),
        consecutive_lapses = LEAST(prev.lapses, 1000000),
        status = CASE WHEN $3 > 0 AND prev.lapses >= $3 AND prev.status = 'active' THEN 'quarantined'
            ELSE prev.status END,
        quarantined_until = CASE WHEN $3 > 0 AND prev.lapses >= $3 AND prev.status = 'active'
            THEN now() + make_interval(secs => $4) ELSE t.quarantined_until END
    FROM prev WHERE t.id = prev.id
    RETURNING CASE WHEN t.status = 'quarantined' AND prev.status <> 'quarantined' THEN t.id END AS id
)
SELECT id FROM changed WHERE id IS NOT NULL"""
_LOCK_TASKS_OF = f"""{TaskRow.select()}
WHERE id IN (SELECT task_id FROM assignments WHERE id = ANY($1::uuid[])) ORDER BY id FOR UPDATE"""
_LOCK_ASSIGNMENTS = f"{AssignmentRow.select()} WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"


async def db_now(session: AsyncSession) -> datetime:
    """The transaction's timestamp: every replica measures leases by the database's clock."""
    now: datetime | None = await session.scalar(select(func.now()))
    assert now is not None
    return now


class Work:
    def __init__(self, db: raw.Driver, now: datetime) -> None:
        self.db = db
        self.now = now
        self.tasks: dict[uuid.UUID, TaskRow] = {}
        self.assignments: dict[uuid.UUID, AssignmentRow] = {}
        self.events: list[tuple[Any, ...]] = []
        self.tallies: dict[str, AgentTally] = {}
        self.notifications: list[dict[str, Any]] = []
        self.finished: list[uuid.UUID] = []  # tasks that reached a terminal state: other replicas' waiters
        self.wake = False
        self.lapses: Counter[str] = Counter()  # agent -> leases it let lapse (or lost) in this unit
        self.quarantine = Quarantine()
        self.quarantined: list[str] = []  # agents this unit quarantined, once flushed

    @classmethod
    async def begin(cls, session: AsyncSession) -> Work:
        """A unit of work inside a session's transaction (the cold paths: recovery, the reaper)."""
        now = await db_now(session)
        return cls(await raw.driver_of(session), now)

    @classmethod
    async def begin_raw(cls, db: raw.Driver) -> Work:
        """A unit of work inside a transaction of app.db.raw (the frame batcher)."""
        now: datetime = await db.fetchval("SELECT now()")
        return cls(db, now)

    async def lock_tasks(self, query: str, *args: Any) -> list[TaskRow]:
        """Load (and, as the query says, lock) tasks selected by a query that extends TaskRow.select()."""
        rows = [TaskRow(record) for record in await self.db.fetch(query, *args)]
        self.tasks.update({row.id: row for row in rows})
        return rows

    async def lock(self, assignment_ids: Iterable[uuid.UUID]) -> None:
        """Lock the assignments and their tasks (tasks first) for the rest of the transaction."""
        ids = sorted(set(assignment_ids) - set(self.assignments))
        if not ids:
            return
        for record in await self.db.fetch(_LOCK_TASKS_OF, ids):
            if record["id"] not in self.tasks:  # a row loaded earlier may carry changes already
                self.tasks[record["id"]] = TaskRow(record)
        for record in await self.db.fetch(_LOCK_ASSIGNMENTS, ids):
            self.assignments[record["id"]] = AssignmentRow(record)

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
        self.events.append((task.id, "transition", previous, task.status, reason, data))
        if task.status in TERMINAL:
            self.finished.append(task.id)

    def progress_event(self, task_id: uuid.UUID, data: dict[str, Any]) -> None:
        self.events.append((task_id, "progress", None, None, None, data))

    def notify(self, message: dict[str, Any]) -> None:
        """NOTIFY the other replicas when (and if) this transaction commits."""
        self.notifications.append(message)

    def tally(self, agent_id: str, *, succeeded: bool, latency_ms: float, tokens: int, cost: float) -> None:
        tally = self.tallies.setdefault(agent_id, AgentTally())
        tally.completed += succeeded
        tally.failed += not succeeded
        tally.latency_ms += latency_ms
        tally.tokens = saturating_add(tally.tokens, tokens)
        tally.cost = capped_cost(tally.cost, cost)

    def lapse(self, agent_id: str) -> None:
        """The agent let a lease lapse or lost the work: a failure on its record (flush writes it). Each lost
        task is a failure, but one loss event (this unit of work: a disconnect, one reaper round) is one lapse
        towards quarantine however many tasks it held: a redeploy that drops an agent holding four tasks must
        not quarantine it at once."""
        if agent_id:
            self.lapses[agent_id] += 1

    async def flush(self) -> None:
        db = self.db
        await TaskRow.write(db, list(self.tasks.values()))
        await AssignmentRow.write(db, list(self.assignments.values()))
        if self.events:
            await db.execute(_INSERT_EVENTS, *raw.columns_of(_events, _EVENT_COLUMNS, self.events))
            self.events = []
        if self.tallies or self.lapses:
            await db.execute(_LOCK_AGENTS, sorted(set(self.tallies) | set(self.lapses)))
        if self.tallies:
            tallies = sorted(self.tallies.items())
            rows = [(agent, t.completed, t.failed, t.latency_ms, t.tokens, t.cost) for agent, t in tallies]
            await db.execute(_TALLY, *raw.columns_of(_agents, _TALLY_COLUMNS, rows))
            self.tallies = {}
        if self.lapses:
            lapses = sorted(self.lapses.items())
            quarantined = await db.fetch(
                _LAPSES,
                [agent for agent, _ in lapses],
                [count for _, count in lapses],
                self.quarantine.after,
                self.quarantine.cooldown,
            )
            self.lapses = Counter()
            for record in quarantined:
                self.quarantined.append(record["id"])
                self.notifications.append({"k": "quarantine", "agent": record["id"]})
        if self.wake:
            self.notifications.append({"k": "work"})
            self.wake = False
        if self.finished:
            self.notifications.extend(finished_messages(self.finished))
            self.finished = []
        if self.notifications:
            payloads = [orjson.dumps(message).decode() for message in self.notifications]
            await db.execute(NOTIFY_ALL, BUS_CHANNEL, payloads)
        self.notifications = []
