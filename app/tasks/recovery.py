"""Recovery: work held by agents or replicas that are gone, lapsed leases, tasks that waited too long.

Each function works inside the caller's transaction and returns what happened (see app.tasks.work.Outcome).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import raw
from app.db.models import Assignment
from app.tasks.lifecycle import OPEN_ASSIGNMENT, back_to_queue, finish
from app.tasks.rows import TaskRow
from app.tasks.states import TaskEvent as Ev
from app.tasks.states import TaskStatus, transition
from app.tasks.work import Finished, Outcome, Quarantine, Work

BATCH = 500
_LAPSED = f"""{TaskRow.select()} WHERE status = ANY($1::text[]) AND lease_expires_at < $2
ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED"""
_BACK = "SELECT id FROM agents WHERE id = ANY($1::text[]) AND status <> 'offline'"
# Open leases whose agent has been offline (or gone) longer than the hand-over grace: nobody claimed them.
_ABANDONED = """SELECT a.id FROM assignments a LEFT JOIN agents g ON g.id = a.agent_id
WHERE a.status IN ('assigned', 'running')
    AND (g.id IS NULL OR (g.status = 'offline' AND g.last_seen_at < now() - make_interval(secs => $1)))
ORDER BY a.id LIMIT $2"""
_OVERDUE = f"""{TaskRow.select()} WHERE status = 'pending' AND expires_at < $1
ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"""


async def requeue_open_assignments(
    session: AsyncSession,
    *,
    agent_ids: Sequence[str] | None = None,
    replica_id: str | None = None,
    assignment_ids: Sequence[uuid.UUID] | None = None,
    reason: str,
    undelivered: bool | Collection[uuid.UUID] = False,
    keep: Collection[uuid.UUID] = (),
    unless_back: bool = False,
    quarantine: Quarantine | None = None,
) -> Outcome:
    """The agents (or a replica's agents) are gone: their leased tasks go back to the queue at once.

    The attempt stays charged (a task whose attempts are spent fails with ``agent_lost``), unless the work
    was ``undelivered`` (True: all of it; or these assignment ids): an `assign` that never reached the
    agent's socket costs the task nothing. ``keep``: assignments left alone (the agent still holds them).
    ``unless_back``: skip the assignments of agents that are no longer offline once the rows are locked (they
    reconnected and claimed their work meanwhile). ``quarantine``: the loss is the agent's (it disconnected,
    went unhealthy, did not come back): each delivered assignment is a lapse on its record (app.tasks.work);
    None when it is not (an operator, a replica that died, an assign never sent).
    """
    query = select(Assignment.id).where(Assignment.status.in_(OPEN_ASSIGNMENT))
    if agent_ids is not None:
        query = query.where(Assignment.agent_id.in_(list(agent_ids)))
    if replica_id is not None:
        query = query.where(Assignment.replica_id == replica_id)
    if assignment_ids is not None:
        query = query.where(Assignment.id.in_(list(assignment_ids)))
    ids = [assignment_id for assignment_id in await session.scalars(query) if assignment_id not in keep]
    outcome = Outcome()
    if not ids:
        return outcome
    work = await Work.begin(session)
    if quarantine is not None:
        work.quarantine = quarantine
    await work.lock(ids)
    back: set[str] = set()
    if unless_back:
        # Read after the locks: a registration that claimed these rows has committed by now (the rows were
        # locked by its claim), so its agent no longer reads as offline.
        agents = sorted({row.agent_id for row in work.assignments.values()})
        back = {record["id"] for record in await work.db.fetch(_BACK, agents)}
    for assignment_id in ids:
        assignment = work.assignments.get(assignment_id)
        if assignment is None or assignment.status not in OPEN_ASSIGNMENT or assignment.agent_id in back:
            continue  # finished while we were looking, or its agent came back for it
        assignment.status, assignment.finished_at, assignment.reason = "lost", work.now, reason
        task = work.current_task(assignment)
        if task is None:
            outcome.finished.append(
                Finished(assignment.task_id, "", assignment.agent_id, "superseded", assignment.id)
            )
            continue
        previous = task.status
        delivered = not (undelivered is True or (undelivered and assignment_id in undelivered))
        if not delivered:
            task.attempt -= 1
        lapsed = delivered and quarantine is not None
        if lapsed:
            work.lapse(assignment.agent_id)
        if task.attempt < task.max_attempts:
            task.status = transition(previous, Ev.RETRY).value
            back_to_queue(task, work.now, 0.0)
            work.wake = True
        else:
            task.status = transition(previous, Ev.FAIL).value
            task.error = {"code": "agent_lost", "message": f"{reason}; no attempts left"}
            finish(task, work.now)
        work.event(task, previous, reason, {"agent_id": assignment.agent_id})
        retried = task.status == TaskStatus.PENDING
        outcome.finished.append(
            Finished(
                task.id,
                task.type,
                assignment.agent_id,
                task.status,
                assignment.id,
                retried=retried,
                in_session=task.session_id is not None,
                lapsed=lapsed,
            )
        )
    await work.flush()
    return outcome


async def reap(session: AsyncSession, *, quarantine: Quarantine | None = None, limit: int = BATCH) -> Outcome:
    """Lapsed leases go back to the queue (timed_out once attempts are spent), each a lapse on its agent's
    record (``quarantine``: when lapses in a row take it out of routing); overdue tasks time out."""
    work = await Work.begin(session)
    if quarantine is not None:
        work.quarantine = quarantine
    now = work.now
    outcome = Outcome()
    lapsed = await work.lock_tasks(_LAPSED, list(OPEN_ASSIGNMENT), now, limit)
    await work.lock([task.assignment_id for task in lapsed if task.assignment_id is not None])
    for task in lapsed:
        previous, agent_id, assignment_id = task.status, task.agent_id or "", task.assignment_id
        assignment = work.assignments.get(assignment_id) if assignment_id else None
        if assignment is not None and assignment.status in OPEN_ASSIGNMENT:
            assignment.status, assignment.finished_at, assignment.reason = "timed_out", now, "lease lapsed"
            work.notify(
                {"k": "cancel", "agent": agent_id, "assignment": str(assignment_id), "reason": "lease lapsed"}
            )
            work.lapse(agent_id)
        if task.attempt < task.max_attempts:
            task.status = transition(previous, Ev.RETRY).value
            back_to_queue(task, now, 0.0)
            work.wake = True
        else:
            task.status = transition(previous, Ev.TIME_OUT).value
            task.error = {
                "code": "timed_out",
                "message": f"no result within {task.timeout:g}s on the last attempt",
            }
            finish(task, now)
        work.event(task, previous, "lease lapsed", {"agent_id": agent_id})
        retried = task.status == TaskStatus.PENDING
        outcome.finished.append(
            Finished(
                task.id,
                task.type,
                agent_id,
                task.status,
                assignment_id,
                retried=retried,
                in_session=task.session_id is not None,
                lapsed=assignment is not None,
            )
        )
    overdue = await work.lock_tasks(_OVERDUE, now, limit)
    for task in overdue:
        previous = task.status
        task.status = transition(previous, Ev.TIME_OUT).value
        task.error = {
            "code": "queue_timeout",
            "message": f"no capable agent took it within {task.queue_timeout:g}s",
        }
        finish(task, now)
        work.event(task, previous, "queue timeout")
        outcome.finished.append(
            Finished(task.id, task.type, "", task.status, in_session=task.session_id is not None)
        )
    await work.flush()
    return outcome


async def requeue_abandoned(
    session: AsyncSession, *, grace: float, quarantine: Quarantine | None = None, limit: int = BATCH
) -> Outcome:
    """Leases whose agent dropped more than ``grace`` seconds ago and did not reconnect to claim them go back
    to the queue (the attempt stays charged: the agent may have run it)."""
    await session.execute(select(1))  # begins the session's transaction, which the statement below joins
    db = await raw.driver_of(session)
    ids = [record["id"] for record in await db.fetch(_ABANDONED, grace, limit)]
    if not ids:
        return Outcome()
    return await requeue_open_assignments(
        session,
        assignment_ids=ids,
        reason=f"the agent did not reconnect within {grace:g}s",
        unless_back=True,
        quarantine=quarantine,
    )
