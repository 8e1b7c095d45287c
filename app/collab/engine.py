"""One step of one session, inside the caller's transaction: the runner's unit of work, and create's first.

`advance` reads the session's subtasks, feeds the finished ones to the strategy, and writes everything the
step decided (state, round, cost, new subtasks, events, the outcome) to the session the caller has locked.
Because all of that commits together, and subtasks are inserted idempotently by (session_id, session_key), a
crash at any point leaves either the whole step or none of it, and the next step redoes exactly what is
missing. What must follow the commit (metrics, wake-ups) is returned in `Advanced`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentplane import tracing as tracing_api
from app import tracing
from app.collab.strategies import FinishedSubtask, SessionSpec, SubtaskSpec, get_strategy
from app.config import Settings
from app.db import raw
from app.db.models import Agent, AgentCapability, CollabSession, SessionEvent, Task
from app.errors import AppError, InvalidInput
from app.metrics import Metrics
from app.ownership import Owner
from app.routing.policy import price_table
from app.routing.scoring import estimate_cost
from app.routing.strategies import COST_TOLERANCE
from app.signals import Signals
from app.statuses import AgentStatus
from app.tasks.lifecycle import db_now
from app.tasks.schemas import TaskCreate
from app.tasks.service import cancel_open_task, notify_finished
from app.tasks.states import OPEN, TERMINAL
from app.tasks.submit import insert_tasks

RUNNING = "running"
FINISHED_EVENT = "finished"


@dataclass
class Advanced:
    """What a committed step means for this process: metrics to count, waiters to wake."""

    strategy: str
    changed: bool = False
    submitted: int = 0
    cancelled: list[uuid.UUID] = field(default_factory=list)
    cancelled_types: list[str] = field(default_factory=list)  # of the cancelled subtasks, for the metric
    finished_status: str | None = None

    def after_commit(self, signals: Signals, metrics: Metrics) -> None:
        if self.submitted:
            signals.work_available()
        for task_id in self.cancelled:
            signals.task_changed(task_id)
        for task_type in self.cancelled_types:
            metrics.tasks_finished.labels(task_type, "cancelled").inc()
        if self.cancelled:
            signals.capacity_freed()  # the cancelled subtasks' agents have free slots again
        if self.finished_status is not None:
            metrics.sessions_finished.labels(self.strategy, self.finished_status).inc()


def session_spec(strategy: str, stored: dict[str, Any]) -> SessionSpec:
    """What the strategy sees of a session, from the spec as stored in collab_sessions.spec."""
    task = stored["task"]
    return SessionSpec(
        strategy=strategy,
        task_type=task["type"],
        capabilities=tuple(task["capabilities"]),
        payload=task["payload"],
        params=stored["params"],
        participants=tuple(stored["participants"]),
        consensus_threshold=stored["consensus_threshold"],
        consensus_max_rounds=stored["consensus_max_rounds"],
        max_parallel=stored["max_parallel"],
    )


async def subtasks(session: AsyncSession, session_id: uuid.UUID) -> list[Task]:
    query = select(Task).where(Task.session_id == session_id).order_by(Task.created_at, Task.session_key)
    return list(await session.scalars(query.execution_options(populate_existing=True)))


def _event(row: CollabSession, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"session_id": row.id, "kind": kind, "data": data}


async def _reported(session: AsyncSession, session_id: uuid.UUID) -> set[str]:
    """Keys of subtasks whose end is already in the session's trail (and so already fed to a step)."""
    rows = await session.scalars(
        select(SessionEvent.data["key"].astext).where(
            SessionEvent.session_id == session_id, SessionEvent.kind == "subtask_finished"
        )
    )
    return {key for key in rows if key is not None}


async def advance(
    session: AsyncSession, settings: Settings, row: CollabSession, *, now: datetime, strict: bool = False
) -> Advanced:
    """Take the next step of ``row`` (locked by the caller, status running). ``strict`` raises a subtask
    that cannot be submitted as InvalidInput (for create, so the client hears it as a 422) instead of
    failing the session."""
    advanced = Advanced(strategy=row.strategy)
    tasks = await subtasks(session, row.id)
    reported = await _reported(session, row.id)
    fresh = [t for t in tasks if t.status in TERMINAL and t.session_key not in reported]
    events = [_finished_event(row, task) for task in fresh]
    cost = sum(task.cost for task in tasks)
    changed = bool(fresh) or not row.state or cost != row.cost
    row.cost = cost
    if now >= row.deadline:
        timeout = row.spec.get("timeout")
        message = f"the session ran longer than its timeout ({timeout:g}s)" if timeout else "timed out"
        await _add_events(session, events)
        await end(session, row, advanced, status="failed", error={"code": "timed_out", "message": message})
        return advanced
    if not changed:
        return advanced
    advanced.changed = True
    finished = [_finished(task) for task in tasks if task.status in TERMINAL]
    try:
        decision = get_strategy(row.strategy).step(session_spec(row.strategy, row.spec), row.state, finished)
    except Exception as exc:  # pure and deterministic: retrying the same step would fail the same way
        await _add_events(session, events)
        error: dict[str, Any] = {"code": "strategy_error", "message": f"{type(exc).__name__}: {exc}"}
        await end(session, row, advanced, status="failed", error=error)
        return advanced
    row.state = decision.state
    if decision.round != row.round:
        events.append(_event(row, "round", {"round": decision.round, "previous": row.round}))
        row.round = decision.round
    await _add_events(session, events)
    budget = row.budget
    over_budget = budget is not None and cost >= budget
    # A subtask may spend only what the session has left (_submit): one that failed for going over it failed
    # the session's budget, not its work.
    if decision.done and not (over_budget and decision.status != "succeeded"):
        assert decision.status is not None
        await end(
            session, row, advanced, status=decision.status, result=decision.result, error=decision.error
        )
    elif over_budget:
        # A session that has just finished keeps its answer (the money is spent); only new spending stops.
        message = f"reported cost {cost:.6f} reached the budget {budget:.6f}"
        error = {"code": "budget_exceeded", "message": message, "cost": cost, "budget": budget}
        await end(session, row, advanced, status="failed", error=error)
    elif decision.submit:
        await _submit(session, settings, row, decision.submit, advanced, strict=strict)
    row.updated_at = now
    row.version += 1
    return advanced


async def _submit(
    session: AsyncSession,
    settings: Settings,
    row: CollabSession,
    specs: Sequence[SubtaskSpec],
    advanced: Advanced,
    *,
    strict: bool,
) -> None:
    task = row.spec["task"]
    # Each subtask may spend what the session has left (advance() has ended the session before it is spent).
    remaining = None if row.budget is None else row.budget - row.cost
    try:
        creates = [
            TaskCreate(
                type=spec.type,
                capabilities=list(spec.capabilities),
                payload=spec.payload,
                agent_ids=list(spec.agent_ids) if spec.agent_ids else None,
                priority=task["priority"],
                timeout=task["timeout"],
                max_attempts=task["max_attempts"],
                max_cost=remaining,
            )
            for spec in specs
        ]
        await session.flush()  # the session's row first: its subtasks (and events) refer to it
        if remaining is not None and (short := await _unaffordable(session, settings, creates, remaining)):
            # Routing offers a subtask only to agents whose estimated cost fits what is left: pending, it
            # would wait for the session's timeout. The budget is what stops the session.
            error = {"code": "budget_exceeded", "message": short, "cost": row.cost, "budget": row.budget}
            await end(session, row, advanced, status="failed", error=error)
            return
        server = tracing.SERVER
        # Each subtask is a child of the step that submits it (tracing off: of the session's own context).
        step = None if server is None else server.step(row.traceparent, row.id, row.round)
        try:
            parent = row.traceparent if step is None else tracing_api.traceparent_of(step)
            created = await insert_tasks(
                await raw.driver_of(session),
                settings,
                creates,
                owner=Owner(key_id=row.owner_key_id, project=row.project),  # the session's owner's
                session_id=row.id,
                session_keys=[spec.key for spec in specs],
                traceparents=[parent] * len(creates),
            )
        finally:
            if step is not None:
                step.set_attribute("agentplane.session.subtasks", len(creates))
                step.end()
    except (ValidationError, AppError) as exc:
        message = exc.detail if isinstance(exc, AppError) else _first_error(exc)
        if strict:
            detail = f"a subtask cannot be submitted: {message}"
            raise InvalidInput(
                detail, errors=[{"field": "task", "message": detail, "type": "value_error"}]
            ) from None
        error = {"code": "submit_failed", "message": f"a subtask cannot be submitted: {message}"}
        await end(session, row, advanced, status="failed", error=error)
        return
    rows = [
        _event(
            row, "subtask_submitted", {"key": spec.key, "task_id": str(task.id), "agent_ids": task.agent_ids}
        )
        for spec, (task, new) in zip(specs, created, strict=True)
        if new
    ]
    await _add_events(session, rows)
    advanced.submitted = len(rows)


async def _unaffordable(
    session: AsyncSession, settings: Settings, creates: Sequence[TaskCreate], remaining: float
) -> str | None:
    """Why no present agent that could take one of ``creates`` fits the ``remaining`` budget, by routing's
    estimate (app.routing.scoring): None when each has such an agent, or has none present yet (one may join).
    Present: connected, or seen lately (one reconnecting through a restart or a deploy counts)."""
    prices = price_table(settings)
    lately = func.now() - timedelta(seconds=settings.replica_timeout + settings.handover_grace)
    present = or_(Agent.status != AgentStatus.OFFLINE.value, Agent.last_seen_at > lately)
    kinds = {(tuple(c.capabilities), tuple(c.agent_ids or ()), c.estimated_tokens) for c in creates}
    for capabilities, agent_ids, estimated in sorted(kinds, key=repr):
        query = select(Agent.model).where(present).distinct()
        for capability in capabilities:
            query = query.where(
                Agent.id.in_(select(AgentCapability.agent_id).where(AgentCapability.name == capability))
            )
        if agent_ids:
            query = query.where(Agent.id.in_(agent_ids))
        models = list(await session.scalars(query))
        if not models:
            continue
        tokens = settings.default_estimated_tokens if estimated is None else estimated
        cheapest = min(estimate_cost(tokens, prices.get(model)) for model in models)
        if cheapest > remaining + COST_TOLERANCE:
            return (
                f"the budget left, {remaining:.6f}, is below the estimated cost of every agent that could "
                f"take the next subtask (the cheapest: {cheapest:.6f} for {tokens} tokens)"
            )
    return None


async def end(
    session: AsyncSession,
    row: CollabSession,
    advanced: Advanced,
    *,
    status: str,
    result: Any = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Finish ``row`` (locked, running): the outcome, its event, and every still-open subtask cancelled."""
    reason = f"session {status}" + (f": {error['code']}" if error else "")
    open_tasks = await session.scalars(
        select(Task)
        .where(Task.session_id == row.id, Task.status.in_([open_status.value for open_status in OPEN]))
        .order_by(Task.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    for task in open_tasks:
        await cancel_open_task(session, task, reason=reason)
        advanced.cancelled.append(task.id)
        advanced.cancelled_types.append(task.type)
    await notify_finished(session, advanced.cancelled)
    row.status = status
    row.result = result
    row.error = error
    row.finished_at = row.updated_at = await db_now(session)
    row.version += 1
    data = {"status": status, "result": result, "error": error, "cost": row.cost, "round": row.round}
    await _add_events(session, [_event(row, FINISHED_EVENT, data)])
    advanced.changed = True
    advanced.finished_status = status
    if tracing.SERVER is not None:
        tracing.SERVER.session_ended(row.traceparent, row.id, status, error)


async def _add_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(SessionEvent), rows)


def _finished(task: Task) -> FinishedSubtask:
    assert task.session_key is not None
    return FinishedSubtask(
        key=task.session_key,
        status=task.status,
        output=task.result,
        error=task.error,
        agent_id=task.agent_id,
    )


def _finished_event(row: CollabSession, task: Task) -> dict[str, Any]:
    data = {
        "key": task.session_key,
        "task_id": str(task.id),
        "status": task.status,
        "agent_id": task.agent_id,
        "cost": task.cost,
        "error": task.error,
    }
    return _event(row, "subtask_finished", data)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
