"""Recovery: work held by agents or replicas that are gone, lapsed leases, tasks that waited too long.

Each function works inside the caller's transaction and returns what happened (see lifecycle.Outcome).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Assignment, Task, TaskEvent
from app.tasks.lifecycle import (
    OPEN_ASSIGNMENT,
    Finished,
    Outcome,
    back_to_queue,
    current_task,
    db_now,
    event_row,
    finish,
)
from app.tasks.service import notify
from app.tasks.states import TaskEvent as Ev
from app.tasks.states import TaskStatus, transition


async def requeue_open_assignments(
    session: AsyncSession,
    *,
    agent_ids: Sequence[str] | None = None,
    replica_id: str | None = None,
    assignment_ids: Sequence[uuid.UUID] | None = None,
    reason: str,
) -> Outcome:
    """The agents (or a replica's agents) are gone: their leased tasks go back to the queue at once.

    The attempt stays charged; a task whose attempts are spent fails with ``agent_lost``.
    """
    query = select(Assignment).where(Assignment.status.in_(OPEN_ASSIGNMENT))
    if agent_ids is not None:
        query = query.where(Assignment.agent_id.in_(list(agent_ids)))
    if replica_id is not None:
        query = query.where(Assignment.replica_id == replica_id)
    if assignment_ids is not None:
        query = query.where(Assignment.id.in_(list(assignment_ids)))
    assignments = list(await session.scalars(query.with_for_update(skip_locked=False)))
    outcome = Outcome()
    if not assignments:
        return outcome
    now = await db_now(session)
    events = []
    for assignment in assignments:
        assignment.status, assignment.finished_at, assignment.reason = "lost", now, reason
        task = await current_task(session, assignment)
        if task is None:
            outcome.finished.append(
                Finished(assignment.task_id, "", assignment.agent_id, "superseded", assignment.id)
            )
            continue
        previous = task.status
        if task.attempt < task.max_attempts:
            task.status = transition(previous, Ev.RETRY).value
            back_to_queue(task, now, 0.0)
        else:
            task.status = transition(previous, Ev.FAIL).value
            task.error = {"code": "agent_lost", "message": f"{reason}; no attempts left"}
            finish(task, now)
        events.append(event_row(task, previous, reason, {"agent_id": assignment.agent_id}))
        outcome.finished.append(
            Finished(
                task.id,
                task.type,
                assignment.agent_id,
                task.status,
                assignment.id,
                retried=task.status == TaskStatus.PENDING,
            )
        )
    if events:
        await session.execute(insert(TaskEvent), events)
        await notify(session, {"k": "work"})
    return outcome


async def reap(session: AsyncSession, *, limit: int = 500) -> Outcome:
    """Lapsed leases go back to the queue (timed_out once attempts are spent); overdue tasks time out."""
    now = await db_now(session)
    outcome = Outcome()
    events = []
    lapsed = await session.scalars(
        select(Task)
        .where(Task.status.in_(OPEN_ASSIGNMENT), Task.lease_expires_at < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    for task in lapsed:
        previous, agent_id, assignment_id = task.status, task.agent_id or "", task.assignment_id
        if task.assignment_id is not None:
            await session.execute(
                update(Assignment)
                .where(Assignment.id == task.assignment_id, Assignment.status.in_(OPEN_ASSIGNMENT))
                .values(status="timed_out", finished_at=now, reason="lease lapsed")
            )
            await notify(
                session,
                {
                    "k": "cancel",
                    "agent": agent_id,
                    "assignment": str(task.assignment_id),
                    "reason": "lease lapsed",
                },
            )
        if task.attempt < task.max_attempts:
            task.status = transition(previous, Ev.RETRY).value
            back_to_queue(task, now, 0.0)
        else:
            task.status = transition(previous, Ev.TIME_OUT).value
            task.error = {
                "code": "timed_out",
                "message": f"no result within {task.timeout:g}s on the last attempt",
            }
            finish(task, now)
        events.append(event_row(task, previous, "lease lapsed", {"agent_id": agent_id}))
        outcome.finished.append(
            Finished(
                task.id, task.type, agent_id, task.status, assignment_id, retried=task.status == "pending"
            )
        )
    overdue = await session.scalars(
        select(Task)
        .where(Task.status == TaskStatus.PENDING.value, Task.expires_at < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    for task in overdue:
        previous = task.status
        task.status = transition(previous, Ev.TIME_OUT).value
        task.error = {
            "code": "queue_timeout",
            "message": f"no capable agent took it within {task.queue_timeout:g}s",
        }
        finish(task, now)
        events.append(event_row(task, previous, "queue timeout"))
        outcome.finished.append(Finished(task.id, task.type, "", task.status))
    if events:
        await session.execute(insert(TaskEvent), events)
    return outcome
