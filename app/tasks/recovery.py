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
_VERSION = "SELECT version FROM agents WHERE id = $1"
_REPLICAS = "SELECT id FROM replicas"
# Hand-over: the leases the reconnecting agent still holds move to this replica, if they are still open.
_CLAIM_HELD = """UPDATE assignments SET replica_id = $3
WHERE id = ANY($2::uuid[]) AND agent_id = $1 AND status IN ('assigned', 'running') RETURNING id"""
# Open leases whose agent has been offline (or gone) longer than the hand-over grace: nobody claimed them.
# `agents_fault`: the lease's replica is alive, so the agent's own socket dropped; a replica that stopped or
# died (its row is gone) is no fault of its agents.
_ABANDONED = """SELECT a.id, EXISTS (SELECT 1 FROM replicas r WHERE r.id = a.replica_id) AS agents_fault
FROM assignments a LEFT JOIN agents g ON g.id = a.agent_id
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
    unless_back: bool = False,
    registration: tuple[str, int] | None = None,
    quarantine: Quarantine | None = None,
) -> Outcome:
    """The agents (or a replica's agents) are gone: their leased tasks go back to the queue at once.

    The attempt stays charged (a task whose attempts are spent fails with ``agent_lost``), unless the work
    was ``undelivered`` (True: all of it; or these assignment ids): an `assign` that never reached the
    agent's socket costs the task nothing. ``unless_back``: skip the assignments of agents that are no longer
    offline once the rows are locked (they reconnected and claimed their work meanwhile). ``registration``
    (agent id, version): act only if that registration still owns the agent once the rows are locked (a newer
    one may have claimed them). ``quarantine``: the loss is the agent's (it disconnected, went unhealthy, did
    not come back): each delivered assignment is a lapse on its record (app.tasks.work); None when it is not
    (an operator, a replica that died, an assign never sent).
    """
    query = select(Assignment.id).where(Assignment.status.in_(OPEN_ASSIGNMENT))
    if agent_ids is not None:
        query = query.where(Assignment.agent_id.in_(list(agent_ids)))
    if replica_id is not None:
        query = query.where(Assignment.replica_id == replica_id)
    if assignment_ids is not None:
        query = query.where(Assignment.id.in_(list(assignment_ids)))
    ids = list(await session.scalars(query))
    if not ids:
        return Outcome()
    work = await Work.begin(session)
    if quarantine is not None:
        work.quarantine = quarantine
    await work.lock(ids)
    # Read after the locks: a registration that claimed these rows has committed by now (its claim locked
    # them), so its agent no longer reads as offline and its version is the new one.
    if registration is not None:
        agent_id, version = registration
        if await work.db.fetchval(_VERSION, agent_id) != version:
            return Outcome()
    back: set[str] = set()
    if unless_back:
        agents = sorted({row.agent_id for row in work.assignments.values()})
        back = {record["id"] for record in await work.db.fetch(_BACK, agents)}
    if replica_id is not None:  # a claim moved the row to the agent's new replica
        ids = [i for i in ids if (r := work.assignments.get(i)) is not None and r.replica_id == replica_id]
    outcome = _requeue_locked(
        work,
        [i for i in ids if (row := work.assignments.get(i)) is None or row.agent_id not in back],
        reason=reason,
        undelivered=undelivered,
        quarantine=quarantine,
    )
    await work.flush()
    return outcome


async def hand_over(
    session: AsyncSession,
    agent_id: str,
    holding: Collection[uuid.UUID],
    *,
    replica_id: str,
    undelivered: Collection[uuid.UUID] = (),
    quarantine: Quarantine | None = None,
) -> tuple[Outcome, tuple[uuid.UUID, ...]]:
    """The agent registers again: the open leases it names (``holding``) move to ``replica_id``, the rest of
    its open work goes back to the queue (charged, and a lapse, unless ``undelivered``). Every row is locked
    first, tasks before assignments in id order like every other writer, and only then claimed or requeued.
    Returns the requeue's outcome and the assignment ids now held through this replica."""
    ids = list(
        await session.scalars(
            select(Assignment.id).where(
                Assignment.agent_id == agent_id, Assignment.status.in_(OPEN_ASSIGNMENT)
            )
        )
    )
    if not ids:
        return Outcome(), ()
    work = await Work.begin(session)
    if quarantine is not None:
        work.quarantine = quarantine
    await work.lock(ids)
    keep = sorted(i for i in ids if i in holding)
    claimed = await work.db.fetch(_CLAIM_HELD, agent_id, keep, replica_id) if keep else []
    held = tuple(record["id"] for record in claimed)
    for assignment_id in held:  # the claim wrote the row: the unit of work must not write it back
        work.assignments.pop(assignment_id, None)
    outcome = _requeue_locked(
        work,
        [i for i in ids if i not in held],
        reason="agent reconnected",
        undelivered=set(undelivered),
        quarantine=quarantine,
    )
    await work.flush()
    return outcome, held


def _requeue_locked(
    work: Work,
    ids: Sequence[uuid.UUID],
    *,
    reason: str,
    undelivered: bool | Collection[uuid.UUID],
    quarantine: Quarantine | None,
) -> Outcome:
    outcome = Outcome()
    for assignment_id in ids:
        assignment = work.assignments.get(assignment_id)
        if assignment is None or assignment.status not in OPEN_ASSIGNMENT:
            continue  # finished while we were looking
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
    # A lease held through a replica that stopped or died lapsed through no fault of its agent.
    alive = {record["id"] for record in await work.db.fetch(_REPLICAS)} if lapsed else set()
    for task in lapsed:
        previous, agent_id, assignment_id = task.status, task.agent_id or "", task.assignment_id
        assignment = work.assignments.get(assignment_id) if assignment_id else None
        if assignment is not None and assignment.status in OPEN_ASSIGNMENT:
            assignment.status, assignment.finished_at, assignment.reason = "timed_out", now, "lease lapsed"
            work.notify(
                {"k": "cancel", "agent": agent_id, "assignment": str(assignment_id), "reason": "lease lapsed"}
            )
            if assignment.replica_id in alive:
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
    records = await db.fetch(_ABANDONED, grace, limit)
    outcome = Outcome()
    for fault in (True, False):  # lapses on the record only where the loss was the agent's
        ids = [record["id"] for record in records if record["agents_fault"] is fault]
        if ids:
            part = await requeue_open_assignments(
                session,
                assignment_ids=ids,
                reason=f"the agent did not reconnect within {grace:g}s",
                unless_back=True,
                quarantine=quarantine if fault else None,
            )
            outcome.merge(part)
    return outcome
