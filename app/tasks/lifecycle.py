"""Tasks as agents and the dispatcher move them: lease, accept, reject, progress, result, requeue, reap.

Every function works inside the caller's transaction and returns what happened, so the caller can send
frames, wake waiters and count metrics only after its commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Agent, Assignment, Task, TaskEvent
from app.routing.scoring import Price, cost_of_usage
from app.tasks.service import notify
from app.tasks.states import LEASED, TaskStatus, backoff_seconds, transition
from app.tasks.states import TaskEvent as Ev

OPEN_ASSIGNMENT = ("assigned", "running")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_base: float
    backoff_max: float


@dataclass
class Finished:
    """A task that left an agent: for metrics, waiters and the dispatcher's capacity count."""

    task_id: uuid.UUID
    task_type: str
    agent_id: str
    status: str  # the task's new status (pending when it went back to the queue)
    assignment_id: uuid.UUID | None = None
    duration_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    retried: bool = False
    rejected: bool = False


@dataclass
class Outcome:
    ack: bool = False  # acknowledge the agent's frame (its result is durable)
    error: str | None = None  # an `error` frame's message (unknown_assignment)
    finished: list[Finished] = field(default_factory=list)


async def db_now(session: AsyncSession) -> datetime:
    """The transaction's timestamp: every replica measures leases by the database's clock."""
    now: datetime | None = await session.scalar(select(func.now()))
    assert now is not None
    return now


def event_row(task: Task, previous: str, reason: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "kind": "transition",
        "from_status": previous,
        "to_status": task.status,
        "reason": reason,
        "data": data,
    }


async def claim_pending(session: AsyncSession, *, capabilities: Sequence[str], limit: int) -> list[Task]:
    """Lock up to ``limit`` due pending tasks whose every capability is offered here, best first."""
    query = (
        select(Task)
        .where(
            Task.status == TaskStatus.PENDING.value,
            Task.available_at <= func.now(),
            Task.required_capabilities.contained_by(list(capabilities)),
        )
        .order_by(Task.priority.desc(), Task.available_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.scalars(query))


async def lease(
    session: AsyncSession, plans: Sequence[tuple[Task, str, str]], *, replica_id: str
) -> list[tuple[Task, Assignment]]:
    """Assign each locked task to its chosen agent with a lease of the task's timeout."""
    if not plans:
        return []
    now = await db_now(session)
    leased: list[tuple[Task, Assignment]] = []
    events = []
    for task, agent_id, model in plans:
        previous = task.status
        task.status = transition(previous, Ev.ASSIGN).value
        task.attempt += 1
        assignment = Assignment(
            id=uuid.uuid4(),
            task_id=task.id,
            agent_id=agent_id,
            model=model,
            replica_id=replica_id,
            attempt=task.attempt,
            status="assigned",
            assigned_at=now,
        )
        task.agent_id = agent_id
        task.assignment_id = assignment.id
        task.assigned_at = now
        task.lease_expires_at = now + timedelta(seconds=task.timeout)
        task.updated_at = now
        session.add(assignment)
        events.append(event_row(task, previous, "assigned", {"agent_id": agent_id, "attempt": task.attempt}))
        leased.append((task, assignment))
    await session.flush()
    await session.execute(insert(TaskEvent), events)
    return leased


async def _owned_assignment(
    session: AsyncSession, agent_id: str, assignment_id: uuid.UUID
) -> Assignment | None:
    assignment = await session.get(Assignment, assignment_id, with_for_update=True, populate_existing=True)
    if assignment is None or assignment.agent_id != agent_id:
        return None  # agents cannot act on each other's work
    return assignment


async def current_task(session: AsyncSession, assignment: Assignment) -> Task | None:
    task = await session.get(Task, assignment.task_id, with_for_update=True, populate_existing=True)
    if task is None or task.assignment_id != assignment.id or task.status not in LEASED:
        return None
    return task


async def accept(session: AsyncSession, agent_id: str, assignment_id: uuid.UUID) -> Outcome:
    assignment = await _owned_assignment(session, agent_id, assignment_id)
    if assignment is None:
        return Outcome(error=f"no assignment {assignment_id} for this agent")
    if assignment.status != "assigned":
        return Outcome()
    task = await current_task(session, assignment)
    now = await db_now(session)
    assignment.status = "running"
    assignment.started_at = now
    if task is not None and task.status == TaskStatus.ASSIGNED:
        previous = task.status
        task.status = transition(previous, Ev.ACCEPT).value
        task.updated_at = now
        await session.execute(insert(TaskEvent), [event_row(task, previous, "accepted by agent")])
    return Outcome()


async def progress(
    session: AsyncSession, agent_id: str, assignment_id: uuid.UUID, value: float, message: str
) -> Outcome:
    assignment = await session.get(Assignment, assignment_id)
    if assignment is None or assignment.agent_id != agent_id:
        return Outcome(error=f"no assignment {assignment_id} for this agent")
    if assignment.status not in OPEN_ASSIGNMENT:
        return Outcome()
    await session.execute(
        insert(TaskEvent),
        [
            {
                "task_id": assignment.task_id,
                "kind": "progress",
                "data": {"progress": value, "message": message},
            }
        ],
    )
    return Outcome()


async def reject(
    session: AsyncSession, agent_id: str, assignment_id: uuid.UUID, reason: str, *, delay: float
) -> Outcome:
    assignment = await _owned_assignment(session, agent_id, assignment_id)
    if assignment is None:
        return Outcome(error=f"no assignment {assignment_id} for this agent")
    if assignment.status not in OPEN_ASSIGNMENT:
        return Outcome()
    now = await db_now(session)
    assignment.status, assignment.finished_at, assignment.reason = "rejected", now, reason or "rejected"
    task = await current_task(session, assignment)
    if task is None:
        return Outcome()
    previous = task.status
    task.status = transition(previous, Ev.REJECT).value
    task.attempt -= 1  # a refusal is not an attempt
    back_to_queue(task, now, delay)
    await session.execute(
        insert(TaskEvent), [event_row(task, previous, f"rejected: {reason or 'no reason'}")]
    )
    await notify(session, {"k": "work"})
    return Outcome(
        finished=[
            Finished(task.id, task.type, agent_id, task.status, assignment.id, retried=True, rejected=True)
        ]
    )


def back_to_queue(task: Task, now: datetime, delay: float) -> None:
    task.agent_id = None
    task.assignment_id = None
    task.lease_expires_at = None
    task.available_at = now + timedelta(seconds=delay)
    task.updated_at = now


def finish(task: Task, now: datetime) -> None:
    task.lease_expires_at = None
    task.finished_at = now
    task.updated_at = now


async def record_result(
    session: AsyncSession,
    agent_id: str,
    model: str,
    frame: Any,
    *,
    prices: Mapping[str, Price],
    cost_limit_per_task: float | None,
    retry: RetryPolicy,
) -> Outcome:
    """Apply a `result` frame. A repeat or a result for a superseded assignment is recorded and acked."""
    assignment = await _owned_assignment(session, agent_id, frame.assignment_id)
    if assignment is None:
        return Outcome(error=f"no assignment {frame.assignment_id} for this agent")
    usage = frame.usage
    error = frame.error.model_dump() if frame.error is not None else None
    if assignment.status not in OPEN_ASSIGNMENT:
        if assignment.output is None and assignment.error is None and assignment.status != "succeeded":
            assignment.output, assignment.error = frame.output, error  # the late answer, kept for the record
        return Outcome(ack=True)
    now = await db_now(session)
    started = assignment.started_at or assignment.assigned_at
    duration = max(0.0, (now - started).total_seconds())
    cost = (
        usage.cost
        if usage.cost is not None
        else cost_of_usage(usage.input_tokens, usage.output_tokens, prices.get(model))
    )
    assignment.finished_at, assignment.latency_ms = now, duration * 1000
    assignment.input_tokens, assignment.output_tokens, assignment.cost = (
        usage.input_tokens,
        usage.output_tokens,
        cost,
    )
    assignment.output, assignment.error = frame.output, error
    task = await current_task(session, assignment)
    if task is None:
        assignment.status, assignment.reason = "superseded", "result arrived after the task moved on"
        return Outcome(
            ack=True, finished=[Finished(assignment.task_id, "", agent_id, "superseded", assignment.id)]
        )
    previous = task.status
    task.input_tokens += usage.input_tokens
    task.output_tokens += usage.output_tokens
    task.cost += cost
    limit = min((c for c in (task.max_cost, cost_limit_per_task) if c is not None), default=None)
    succeeded = frame.status == "succeeded"
    reason = "succeeded"
    if limit is not None and cost > limit:
        succeeded, reason = False, "cost limit exceeded"
        error = {
            "code": "cost_limit_exceeded",
            "message": f"reported cost {cost:.6f} exceeds the limit {limit:.6f}",
            "retryable": False,
        }
    assignment.status = "succeeded" if succeeded else "failed"
    retried = False
    if succeeded:
        task.status = transition(previous, Ev.SUCCEED).value
        task.result, task.error = frame.output, None
        finish(task, now)
    elif error and error.get("retryable") and task.attempt < task.max_attempts:
        task.status = transition(previous, Ev.RETRY).value
        task.error = error
        back_to_queue(
            task, now, backoff_seconds(task.attempt, base=retry.backoff_base, cap=retry.backoff_max)
        )
        reason, retried = f"retrying after: {error.get('message') or error.get('code')}", True
        await notify(session, {"k": "work"})
    else:
        task.status = transition(previous, Ev.FAIL).value
        task.result = frame.output if reason == "cost limit exceeded" else None
        task.error = error or {"code": "failed", "message": "the agent reported failure"}
        finish(task, now)
        reason = reason if reason != "succeeded" else "failed"
    await session.execute(insert(TaskEvent), [event_row(task, previous, reason, {"agent_id": agent_id})])
    await _count_on_agent(
        session,
        agent_id,
        succeeded=succeeded,
        latency_ms=duration * 1000,
        tokens=usage.input_tokens + usage.output_tokens,
        cost=cost,
    )
    finished = Finished(
        task.id,
        task.type,
        agent_id,
        task.status,
        assignment.id,
        duration,
        usage.input_tokens,
        usage.output_tokens,
        cost,
        retried,
    )
    return Outcome(ack=True, finished=[finished])


async def _count_on_agent(
    session: AsyncSession, agent_id: str, *, succeeded: bool, latency_ms: float, tokens: int, cost: float
) -> None:
    done = Agent.tasks_completed + Agent.tasks_failed
    await session.execute(
        update(Agent)
        .where(Agent.id == agent_id)
        .values(
            tasks_completed=Agent.tasks_completed + (1 if succeeded else 0),
            tasks_failed=Agent.tasks_failed + (0 if succeeded else 1),
            avg_latency_ms=(Agent.avg_latency_ms * done + latency_ms) / (done + 1),
            tokens_processed=Agent.tokens_processed + tokens,
            cost_incurred=Agent.cost_incurred + cost,
        )
    )
