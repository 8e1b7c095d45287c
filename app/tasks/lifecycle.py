"""Tasks as agents and the dispatcher move them: claim, lease, accept, progress, reject, result.

Agent-frame functions work on a Work (app.tasks.work) inside the caller's transaction, after the caller has
locked the assignments they name; each returns what happened, so the caller sends acks, wakes waiters and
counts metrics only after its commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.db import raw
from app.routing.scoring import Price, cost_of_usage
from app.statuses import AssignmentStatus
from app.tasks.rows import TaskRow
from app.tasks.states import TaskEvent as Ev
from app.tasks.states import TaskStatus, backoff_seconds, transition
from app.tasks.work import Finished, Outcome, Work, capped_cost, db_now, saturating_add

__all__ = ["Finished", "Outcome", "RetryPolicy", "Work", "db_now"]

OPEN_ASSIGNMENT = (AssignmentStatus.ASSIGNED, AssignmentStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_base: float
    backoff_max: float


# The model a task asks for now: app.routing.strategies.model_for_attempt, in SQL ($6: fallback_after).
MODEL_NOW = """CASE WHEN fallback_models IS NULL OR attempt < $6 THEN model
    ELSE fallback_models[LEAST(attempt - $6 + 1, cardinality(fallback_models))] END"""
_CLAIM = f"""SELECT id, type, required_capabilities, payload, attempt, timeout, available_at, model, max_cost,
    estimated_tokens, agent_ids, strategy, min_versions, fallback_models, traceparent
FROM tasks
WHERE status = 'pending' AND available_at <= now()
    AND required_capabilities <@ $1::text[]
    AND ({MODEL_NOW} IS NULL OR {MODEL_NOW} = ANY($2::text[]))
    AND (agent_ids IS NULL OR agent_ids && $3::text[])
    AND ($5::text[] IS NULL OR type = ANY($5::text[]))
    AND NOT (id = ANY($7::uuid[]))
ORDER BY priority DESC, available_at
LIMIT $4
FOR UPDATE SKIP LOCKED"""
# One statement leases a whole batch: the assignments, the tasks and their events. The tasks are locked by
# the claim; `status = 'pending'` is the guard all the same.
_LEASE = """WITH v AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::float8[])
        WITH ORDINALITY AS v(task, assignment, agent, model, attempt, timeout, ord)
), leased AS (
    UPDATE tasks AS t SET status = 'assigned', attempt = v.attempt, agent_id = v.agent,
        assignment_id = v.assignment, assigned_at = now(),
        lease_expires_at = now() + v.timeout * interval '1 second', updated_at = now()
    FROM v WHERE t.id = v.task AND t.status = 'pending'
    RETURNING t.id
), assignments AS (
    INSERT INTO assignments (id, task_id, agent_id, model, replica_id, attempt, status, assigned_at)
    SELECT v.assignment, v.task, v.agent, v.model, $7, v.attempt, 'assigned', now()
    FROM v JOIN leased ON leased.id = v.task
), events AS (
    INSERT INTO task_events (task_id, kind, from_status, to_status, reason, data, at)
    SELECT v.task, 'transition', 'pending', 'assigned', 'assigned',
        jsonb_build_object('agent_id', v.agent, 'attempt', v.attempt), now()
    FROM v JOIN leased ON leased.id = v.task ORDER BY v.ord
)
SELECT now() AS now, array_agg(id) AS ids FROM leased"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A pending task the dispatcher has locked: what routing and the `assign` frame need."""

    id: uuid.UUID
    type: str
    required_capabilities: list[str]
    payload: Any
    attempt: int
    timeout: float
    available_at: datetime
    model: str | None
    max_cost: float | None
    estimated_tokens: int | None
    agent_ids: list[str] | None
    strategy: str | None
    min_versions: dict[str, str] | None = None
    fallback_models: list[str] | None = None
    traceparent: str | None = None  # the task's stored trace context (app.tracing)


@dataclass(frozen=True, slots=True)
class Lease:
    """A task leased to an agent: what the `assign` frame and the metrics need."""

    task_id: uuid.UUID
    task_type: str
    payload: dict[str, Any]
    timeout: float
    attempt: int
    available_at: datetime
    assignment_id: uuid.UUID
    agent_id: str
    model: str
    assigned_at: datetime
    deadline: datetime
    traceparent: str | None  # the task's stored trace context: the parent of its dispatch spans


async def claim_pending(
    db: raw.Driver,
    *,
    capabilities: Sequence[str],
    models: Sequence[str],
    agent_ids: Sequence[str],
    task_types: Sequence[str] | None = None,
    fallback_after: int = 1,
    limit: int,
    exclude: Sequence[uuid.UUID] = (),
) -> list[Claimed]:
    """Lock up to ``limit`` due pending tasks, best first, that the agents here could take: every capability
    offered, the model it asks for now present, a permitted agent present, its type handled (``task_types``
    None: some agent here takes any type). (Filtering here, not after, keeps tasks that only other replicas
    can serve from crowding out the ones this replica can.) Rows carry the columns routing and the `assign`
    frame need. ``exclude``: tasks claimed lately that no agent here could take (the dispatcher's stuck set),
    so they do not fill every claim ahead of lower-priority work that can run."""
    types = None if task_types is None else list(task_types)
    rows = await db.fetch(
        _CLAIM, list(capabilities), list(models), list(agent_ids), limit, types, fallback_after, list(exclude)
    )
    return [Claimed(*row) for row in rows]


async def lease(db: raw.Driver, plans: Sequence[tuple[Claimed, str, str]], *, replica_id: str) -> list[Lease]:
    """Assign each claimed (locked) task to its chosen agent (id, model) with a lease of its timeout."""
    if not plans:
        return []
    transition(TaskStatus.PENDING, Ev.ASSIGN)  # the table's word, not ours, that this move is legal
    assignment_ids = [uuid.uuid4() for _ in plans]
    row = await db.fetchrow(
        _LEASE,
        [task.id for task, _, _ in plans],
        assignment_ids,
        [agent_id for _, agent_id, _ in plans],
        [model for _, _, model in plans],
        [task.attempt + 1 for task, _, _ in plans],
        [task.timeout for task, _, _ in plans],
        replica_id,
    )
    now: datetime = row["now"]
    leased = set(row["ids"] or ())
    return [
        Lease(
            task_id=task.id, task_type=task.type, payload=task.payload, timeout=task.timeout,
            attempt=task.attempt + 1, available_at=task.available_at, assignment_id=assignment_id,
            agent_id=agent_id, model=model, assigned_at=now, deadline=now + timedelta(seconds=task.timeout),
            traceparent=task.traceparent,
        )
        for (task, agent_id, model), assignment_id in zip(plans, assignment_ids, strict=True)
        if task.id in leased
    ]  # fmt: skip


def _unknown(assignment_id: uuid.UUID) -> Outcome:
    return Outcome(error=f"no assignment {assignment_id} for this agent")


def accept(work: Work, agent_id: str, assignment_id: uuid.UUID, *, at: datetime) -> Outcome:
    """``at``: when the frame arrived (frames committed in one batch share a transaction time)."""
    assignment = work.owned(agent_id, assignment_id)
    if assignment is None:
        return _unknown(assignment_id)
    if assignment.status != "assigned":
        return Outcome()
    assignment.status, assignment.started_at = "running", at
    task = work.current_task(assignment)
    if task is not None and task.status == TaskStatus.ASSIGNED:
        previous = task.status
        task.status = transition(previous, Ev.ACCEPT).value
        task.updated_at = work.now
        work.event(task, previous, "accepted by agent")
    return Outcome()


def progress(work: Work, agent_id: str, assignment_id: uuid.UUID, value: float, message: str) -> Outcome:
    assignment = work.owned(agent_id, assignment_id)
    if assignment is None:
        return _unknown(assignment_id)
    if assignment.status in OPEN_ASSIGNMENT:
        work.progress_event(assignment.task_id, {"progress": value, "message": message})
    return Outcome()


def back_to_queue(task: TaskRow, now: datetime, delay: float) -> None:
    """Pending again; its queue timeout counts afresh from now (time spent running is not time waiting)."""
    task.expires_at = now + timedelta(seconds=task.queue_timeout + delay)
    task.agent_id = None
    task.assignment_id = None
    task.lease_expires_at = None
    task.available_at = now + timedelta(seconds=delay)
    task.updated_at = now


def finish(task: TaskRow, now: datetime) -> None:
    task.lease_expires_at = None
    task.finished_at = now
    task.updated_at = now


def reject(work: Work, agent_id: str, assignment_id: uuid.UUID, reason: str, *, delay: float) -> Outcome:
    assignment = work.owned(agent_id, assignment_id)
    if assignment is None:
        return _unknown(assignment_id)
    if assignment.status not in OPEN_ASSIGNMENT:
        return Outcome()
    assignment.status, assignment.finished_at, assignment.reason = "rejected", work.now, reason or "rejected"
    task = work.current_task(assignment)
    if task is None:
        return Outcome()
    previous = task.status
    task.status = transition(previous, Ev.REJECT).value
    task.attempt -= 1  # a refusal is not an attempt
    back_to_queue(task, work.now, delay)
    work.event(task, previous, f"rejected: {reason or 'no reason'}")
    work.wake = True
    finished = Finished(
        task.id,
        task.type,
        agent_id,
        task.status,
        assignment.id,
        retried=True,
        rejected=True,
        in_session=task.session_id is not None,
    )
    return Outcome(finished=[finished])


def record_result(
    work: Work,
    agent_id: str,
    model: str,
    frame: Any,
    *,
    prices: Mapping[str, Price],
    cost_limit_per_task: float | None,
    retry: RetryPolicy,
    at: datetime,
) -> Outcome:
    """Apply a `result` frame that arrived at ``at``. A repeat, or a result for a superseded assignment, is
    recorded and acked."""
    assignment = work.owned(agent_id, frame.assignment_id)
    if assignment is None:
        return _unknown(frame.assignment_id)
    usage = frame.usage
    error = frame.error.model_dump() if frame.error is not None else None
    if assignment.status not in OPEN_ASSIGNMENT:
        if assignment.blank and assignment.status != "succeeded":
            assignment.output, assignment.error = frame.output, error  # the late answer, kept for the record
        return Outcome(ack=True)
    now = work.now
    duration = max(0.0, (at - (assignment.started_at or assignment.assigned_at)).total_seconds())
    cost = usage.cost
    if cost is None:
        cost = cost_of_usage(usage.input_tokens, usage.output_tokens, prices.get(model))
    assignment.finished_at, assignment.latency_ms = at, duration * 1000
    assignment.input_tokens, assignment.output_tokens = usage.input_tokens, usage.output_tokens
    assignment.cost, assignment.output, assignment.error = cost, frame.output, error
    task = work.current_task(assignment)
    if task is None:
        assignment.status, assignment.reason = "superseded", "result arrived after the task moved on"
        return Outcome(
            ack=True, finished=[Finished(assignment.task_id, "", agent_id, "superseded", assignment.id)]
        )
    previous = task.status
    task.input_tokens = saturating_add(task.input_tokens, usage.input_tokens)
    task.output_tokens = saturating_add(task.output_tokens, usage.output_tokens)
    task.cost = capped_cost(task.cost, cost)
    limit = min((c for c in (task.max_cost, cost_limit_per_task) if c is not None), default=None)
    succeeded, retried = frame.status == "succeeded", False
    if limit is not None and cost > limit:
        succeeded = False
        error = {
            "code": "cost_limit_exceeded",
            "message": f"reported cost {cost:.6f} exceeds the limit {limit:.6f}",
            "retryable": False,
        }
    assignment.status = "succeeded" if succeeded else "failed"
    if succeeded:
        task.status = transition(previous, Ev.SUCCEED).value
        task.result, task.error = frame.output, None
        finish(task, now)
        reason = "succeeded"
    elif error and error.get("retryable") and task.attempt < task.max_attempts:
        task.status = transition(previous, Ev.RETRY).value
        task.error = error
        back_to_queue(
            task, now, backoff_seconds(task.attempt, base=retry.backoff_base, cap=retry.backoff_max)
        )
        reason, retried = f"retrying after: {error.get('message') or error.get('code')}", True
        work.wake = True
    else:
        task.status = transition(previous, Ev.FAIL).value
        over_budget = error is not None and error.get("code") == "cost_limit_exceeded"
        task.result = frame.output if over_budget else None
        task.error = error or {"code": "failed", "message": "the agent reported failure"}
        finish(task, now)
        reason = "cost limit exceeded" if over_budget else "failed"
    work.event(task, previous, reason, {"agent_id": agent_id})
    tokens = saturating_add(usage.input_tokens, usage.output_tokens)
    work.tally(agent_id, succeeded=succeeded, latency_ms=duration * 1000, tokens=tokens, cost=cost)
    finished = Finished(
        task.id, task.type, agent_id, task.status, assignment.id, duration,
        usage.input_tokens, usage.output_tokens, cost, retried, executed=True,
        in_session=task.session_id is not None,
    )  # fmt: skip
    return Outcome(ack=True, finished=[finished])
