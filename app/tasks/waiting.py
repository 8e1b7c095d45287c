"""Why a pending task waits: what no connected agent offers, or what the capable ones are doing.

Computed only when a pending task is read by id (GET /api/v1/tasks/{id}, and so `task get` and `task submit
--wait`), never on submit or dispatch: the hot paths pay nothing for it. A few reads over the registry; the
rules are routing's own (app.routing.strategies), so the answer says what the dispatcher would decide.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task
from app.routing.strategies import handles, model_for_attempt, version_at_least
from app.statuses import TaskStatus
from app.tasks.schemas import RefusalOut, TaskOut, WaitingOut
from app.tasks.service import to_out

REFUSALS = 5  # the latest refusals shown
SAMPLE = 1000  # capable agents looked at one by one, at most
RECENT = 60.0  # seconds: a refusal this recent still explains the wait

# Connected agents (not offline), with whether each handles the type and offers every capability.
_AGENTS = """SELECT a.id, a.model, a.status, a.task_types, a.max_concurrency,
    (SELECT count(*) FROM assignments s
        WHERE s.agent_id = a.id AND s.status IN ('assigned', 'running')) AS open,
    coalesce((SELECT jsonb_object_agg(c.name, c.version) FROM agent_capabilities c
        WHERE c.agent_id = a.id AND c.name = ANY(:caps)), CAST('{}' AS jsonb)) AS versions
FROM agents a
WHERE a.status <> 'offline'
    AND (SELECT count(*) FROM agent_capabilities c WHERE c.agent_id = a.id AND c.name = ANY(:caps))
        = cardinality(:caps)
ORDER BY a.id LIMIT :sample"""
_COUNTS = """SELECT now() AS now, count(*) AS connected,
    count(*) FILTER (WHERE task_types IS NULL OR jsonb_exists(task_types, :type)) AS typed
FROM agents WHERE status <> 'offline'"""
_REFUSALS = """SELECT agent_id, finished_at, reason FROM assignments
WHERE task_id = :task AND status = 'rejected' ORDER BY finished_at DESC NULLS LAST, id LIMIT :limit"""
# How its last attempt ended: a refusal waits a short while, a failure its retry backoff.
_LAST_ENDED = """SELECT status FROM assignments WHERE task_id = :task AND finished_at IS NOT NULL
ORDER BY finished_at DESC, id LIMIT 1"""


def _listed(names: list[str]) -> str:
    return "[" + ", ".join(names) + "]"


async def explain(session: AsyncSession, task: Task, *, fallback_after: int) -> WaitingOut:
    caps = list(task.required_capabilities)
    counts = (await session.execute(text(_COUNTS), {"type": task.type})).one()
    rows = (await session.execute(text(_AGENTS), {"caps": caps, "sample": SAMPLE})).mappings().all()
    refusals = [
        RefusalOut(agent_id=r["agent_id"], at=r["finished_at"], reason=r["reason"])
        for r in (await session.execute(text(_REFUSALS), {"task": task.id, "limit": REFUSALS})).mappings()
    ]
    model = model_for_attempt(task.model, task.fallback_models, task.attempt, fallback_after)
    # How its last attempt ended matters only while the task is not yet due again.
    due_later = task.available_at > counts.now
    last = await session.scalar(text(_LAST_ENDED), {"task": task.id}) if due_later else None
    reason, eligible = _reason(
        task,
        model,
        counts.now,
        counts.connected,
        counts.typed,
        rows,
        refusals,
        refused_last=last == "rejected",
    )
    return WaitingOut(reason=reason, eligible_agents=eligible, refusals=refusals)


def _reason(
    task: Task,
    model: str | None,
    now: datetime,
    connected: int,
    typed: int,
    capable: Any,
    refusals: list[RefusalOut],
    *,
    refused_last: bool = False,
) -> tuple[str, int]:
    """The first thing, in routing's order, that no connected agent offers; else what the capable ones do."""
    caps = _listed(list(task.required_capabilities))
    if connected == 0:
        return "no agent is connected", 0
    if typed == 0:
        return f"no connected agent handles type {task.type!r}", 0
    if not capable:
        return f"no connected agent has capabilities {caps}", 0
    left = [row for row in capable if handles(_types(row["task_types"]), task.type)]
    if not left:
        return f"no connected agent both handles type {task.type!r} and has capabilities {caps}", 0
    if model is not None:
        left = [row for row in left if row["model"] == model]
        if not left:
            return f"no connected agent with those capabilities runs model {model!r}", 0
    if task.agent_ids is not None:
        left = [row for row in left if row["id"] in task.agent_ids]
        if not left:
            return f"none of the agents it may run on ({_listed(task.agent_ids)}) is connected and capable", 0
    for name, minimum in sorted((task.min_versions or {}).items()):
        left = [row for row in left if version_at_least(row["versions"].get(name, ""), minimum)]
        if not left:
            return f"no connected capable agent declares {name} version {minimum} or later", 0
    active = [row for row in left if row["status"] == "active"]
    if not active:
        statuses = ", ".join(sorted({row["status"] for row in left}))
        return f"the agents that could take it are not taking work ({statuses})", len(left)
    if task.available_at > now:
        if refused_last and refusals:
            last = refusals[0]
            why = f"a short wait after {last.agent_id} refused it: {last.reason or 'no reason given'}"
        else:
            why = "backoff after a failed attempt"
        return f"it is due again at {task.available_at.isoformat()} ({why})", len(left)
    recent = {r.agent_id for r in refusals if r.at is not None and (now - r.at).total_seconds() < RECENT}
    if recent >= {row["id"] for row in active}:
        latest = refusals[0].reason or "no reason given"
        return f"every agent that could take it refused it recently (latest: {latest})", len(left)
    if all(row["open"] >= row["max_concurrency"] for row in active):
        return f"every agent that could take it is busy ({len(active)})", len(left)
    return "an agent can take it: it should be assigned shortly (a cost cap may also rule agents out)", len(
        left
    )


def _types(value: Any) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


async def view(session: AsyncSession, task: Task, *, fallback_after: int) -> TaskOut:
    """The task as the API shows it, with why it waits when it is pending."""
    out = to_out(task)
    if task.status == TaskStatus.PENDING:
        out.waiting = await explain(session, task, fallback_after=fallback_after)
    return out
