"""Collaboration sessions as clients see them: create, read, list, cancel. Services own their transactions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentplane import tracecontext
from app.agents.service import open_assignment_counts
from app.collab import engine
from app.collab.participants import AgentView, ParticipantError, check_steps, required_capabilities, resolve
from app.collab.schemas import SessionCreate, SessionOut, SubtaskOut
from app.collab.strategies import SpecError, get_strategy
from app.config import Settings
from app.db.models import Agent, AgentCapability, CollabSession, SessionEvent, Task
from app.errors import Conflict, InvalidInput, SessionNotFound
from app.metrics import Metrics
from app.ownership import Owner, find_visible, visible_to
from app.routing.policy import policy_from_settings
from app.security import Principal
from app.signals import Signals
from app.tasks.lifecycle import db_now
from app.tasks.schemas import NAME_PATTERN
from app.tasks.service import decode_cursor, encode_cursor

_NAME = re.compile(NAME_PATTERN)


def _invalid(message: str, field: str, kind: str = "value_error") -> InvalidInput:
    return InvalidInput(message, errors=[{"field": field, "message": message, "type": kind}])


def spec_error_field(message: str) -> str:
    """The request field a SpecError names first ("params.chunk_size must ..." -> params.chunk_size)."""
    head = message.split(" ", 1)[0].rstrip(":")
    if head.startswith(("params", "participants")):
        return head
    if head.startswith("payload"):
        return f"task.{head}"
    return "params"


def _check_names(params: dict[str, Any]) -> None:
    """Capabilities and task types the params name become subtask fields later; refuse bad ones now, not
    when the session reaches them (the strategies check only that they are non-empty strings)."""
    named = [(f"params.{key}", params.get(key)) for key in ("reduce_capability", "reduce_type")]
    steps = params.get("steps")
    for number, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict):
            named += [(f"params.steps[{number}].{key}", step.get(key)) for key in ("capability", "type")]
    for field, value in named:
        if isinstance(value, str) and not _NAME.match(value):
            raise _invalid(f"{field} {value!r} is not a valid name ({NAME_PATTERN})", field)


async def _agents(session: AsyncSession, body: SessionCreate, required: Sequence[str]) -> list[AgentView]:
    """The agents participant resolution may choose from (or must find, when named)."""
    request = body.participants
    if request is None:
        return []
    query = select(Agent)
    if request.agent_ids is not None:
        query = query.where(Agent.id.in_(request.agent_ids))
    else:
        query = query.where(Agent.status != "offline")
        for capability in required:
            has = select(AgentCapability.agent_id).where(AgentCapability.name == capability)
            query = query.where(Agent.id.in_(has))
    agents = list(await session.scalars(query))
    counts = await open_assignment_counts(session, [agent.id for agent in agents])
    views = []
    for agent in agents:
        done = agent.tasks_completed + agent.tasks_failed
        views.append(
            AgentView(
                id=agent.id,
                model=agent.model,
                status=agent.status,
                capabilities=frozenset(str(cap.get("name")) for cap in agent.capabilities),
                max_concurrency=agent.max_concurrency,
                active=counts.get(agent.id, 0),
                success_rate=agent.tasks_completed / done if done else 1.0,
            )
        )
    return views


def _stored_spec(body: SessionCreate, settings: Settings, participants: tuple[str, ...]) -> dict[str, Any]:
    """The session's spec as stored: the request, its resolved participants and the settings in force now,
    so a restart under different settings does not change a session already running."""
    return {
        "task": body.task.model_dump(mode="json"),
        "participants": list(participants),
        "participants_request": body.participants.model_dump(mode="json") if body.participants else None,
        "params": body.params,
        "consensus_threshold": settings.consensus_threshold,
        "consensus_max_rounds": settings.consensus_max_rounds,
        "max_parallel": settings.map_reduce_max_parallel,
        "timeout": body.timeout or settings.collaboration_timeout,
    }


async def create_session(
    session: AsyncSession,
    settings: Settings,
    body: SessionCreate,
    *,
    owner: Owner,
    signals: Signals,
    metrics: Metrics,
    traceparent: str | None = None,
) -> SessionOut:
    """``traceparent``: the session's trace context (app.tracing: its span, or the client's own)."""
    limit = settings.cost_limit_per_session
    if body.budget is not None and limit is not None and body.budget.max_cost > limit:
        raise _invalid(
            f"budget.max_cost {body.budget.max_cost:g} is above the per-session cost limit {limit:g}"
            " (AGENT_COST_LIMIT_PER_SESSION)",
            "budget.max_cost",
            "less_than_equal",
        )
    if body.strategy != "chain" and not body.task.capabilities:
        raise _invalid(
            f"{body.strategy} needs task.capabilities (every subtask requires them)", "task.capabilities"
        )
    if body.timeout is not None and body.timeout > settings.collaboration_timeout:
        limit = settings.collaboration_timeout
        raise _invalid(f"timeout may be at most {limit:g}s (AGENT_COLLABORATION_TIMEOUT)", "timeout")
    request = body.participants
    try:
        # The params first, so a bad spec is named before any shortfall of agents; until participants are
        # resolved, a stand-in lets consensus see that some were asked for.
        asked = tuple(request.agent_ids or ["*"]) if request is not None else ()
        get_strategy(body.strategy).validate(
            engine.session_spec(body.strategy, _stored_spec(body, settings, asked))
        )
        _check_names(body.params)
        required = required_capabilities(body.strategy, request, body.task.capabilities)
        agents = await _agents(session, body, required)
        participants = resolve(
            strategy=body.strategy,
            request=request,
            task_capabilities=body.task.capabilities,
            agents=agents,
            policy=policy_from_settings(settings),
            estimated_tokens=settings.default_estimated_tokens,
        )
        if body.strategy == "chain":
            check_steps(body.params, participants, agents)
    except ParticipantError as exc:
        raise _invalid(str(exc), exc.field, "participants") from None
    except SpecError as exc:
        raise _invalid(str(exc), spec_error_field(str(exc)), "spec_error") from None
    stored = _stored_spec(body, settings, participants)
    # Every column set here: a server default would leave the attribute expired, and reading an expired
    # attribute under asyncio raises instead of loading.
    row = CollabSession(
        id=uuid.uuid4(),
        strategy=body.strategy,
        spec=stored,
        state={},
        status=engine.RUNNING,
        round=0,
        cost=0.0,
        result=None,
        error=None,
        finished_at=None,
        version=1,
        owner_key_id=owner.key_id,  # its subtasks are the owner's too (engine._submit)
        project=owner.project,
        traceparent=traceparent,  # its steps' parent: one trace per session
    )
    now = await db_now(session)
    budget = body.budget.max_cost if body.budget else settings.cost_limit_per_session
    row.budget, row.deadline = budget, now + timedelta(seconds=stored["timeout"])
    row.created_at = row.updated_at = now
    session.add(row)
    await session.flush()
    created = {"strategy": body.strategy, "participants": list(participants), "budget": budget}
    session.add(SessionEvent(session_id=row.id, kind="created", data=created))
    await session.flush()  # before the step's events, so "created" comes first in the trail
    advanced = await engine.advance(session, settings, row, now=now, strict=True)
    await session.commit()
    advanced.after_commit(signals, metrics)
    return await session_view(session, row.id)


async def get_session(
    session: AsyncSession, session_id: uuid.UUID, *, viewer: Principal, lock: bool = False
) -> CollabSession:
    """The session, if ``viewer`` may see it; otherwise the same 404 as for an id that does not exist."""
    row = await find_visible(session, CollabSession, session_id, viewer=viewer, lock=lock)
    if row is None:
        raise SessionNotFound(f"no session with id {session_id}")
    return row


async def list_sessions(
    session: AsyncSession,
    *,
    viewer: Principal,
    status: str | None,
    strategy: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[CollabSession], str | None]:
    query = select(CollabSession)
    if (visible := visible_to(viewer, CollabSession)) is not None:
        query = query.where(visible)
    if status:
        query = query.where(CollabSession.status == status)
    if strategy:
        query = query.where(CollabSession.strategy == strategy)
    if cursor:
        stamp, row_id = decode_cursor(cursor)
        query = query.where(
            or_(
                CollabSession.created_at < stamp,
                and_(CollabSession.created_at == stamp, CollabSession.id < row_id),
            )
        )
    order = (CollabSession.created_at.desc(), CollabSession.id.desc())
    rows = list(await session.scalars(query.order_by(*order).limit(limit + 1)))
    last = rows[limit - 1] if len(rows) > limit else None
    return rows[:limit], encode_cursor(last.created_at, last.id) if last else None


async def cancel_session(
    session: AsyncSession,
    session_id: uuid.UUID,
    *,
    viewer: Principal,
    signals: Signals,
    metrics: Metrics,
    reason: str = "cancelled by client",
) -> SessionOut:
    row = await get_session(session, session_id, viewer=viewer, lock=True)
    if row.status != engine.RUNNING:
        raise Conflict(f"the session is already {row.status}; only a running session can be cancelled")
    row.cost = sum(task.cost for task in await engine.subtasks(session, row.id))
    advanced = engine.Advanced(strategy=row.strategy)
    await engine.end(
        session, row, advanced, status="cancelled", error={"code": "cancelled", "message": reason}
    )
    await session.commit()
    advanced.after_commit(signals, metrics)
    return await session_view(session, row.id)


async def events_after(
    session: AsyncSession, session_id: uuid.UUID, after_id: int, limit: int = 500
) -> list[SessionEvent]:
    query = (
        select(SessionEvent)
        .where(SessionEvent.session_id == session_id, SessionEvent.id > after_id)
        .order_by(SessionEvent.id)
        .limit(limit)
    )
    return list(await session.scalars(query))


def subtask_out(task: Task) -> SubtaskOut:
    return SubtaskOut(
        key=task.session_key or "",
        task_id=task.id,
        type=task.type,
        status=task.status,
        agent_id=task.agent_id,
        attempt=task.attempt,
        output=task.result,
        error=task.error,
        cost=task.cost,
        created_at=task.created_at,
        finished_at=task.finished_at,
    )


def to_out(row: CollabSession, subtasks: Sequence[Task] | None = None) -> SessionOut:
    spec = row.spec
    return SessionOut(
        id=row.id,
        strategy=row.strategy,
        status=row.status,
        round=row.round,
        participants=spec["participants"],
        task=spec["task"],
        params=spec["params"],
        budget=row.budget,
        # A running session's cost moves with every result; its stored cost is as of its last step.
        cost=sum(task.cost for task in subtasks) if subtasks is not None else row.cost,
        result=row.result,
        error=row.error,
        state=row.state,
        deadline=row.deadline,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        trace_id=tracecontext.trace_id_of(row.traceparent),
        subtasks=[subtask_out(task) for task in subtasks] if subtasks is not None else None,
    )


async def session_view(session: AsyncSession, session_id: uuid.UUID) -> SessionOut:
    """The session with its subtasks, for a caller that has already checked who may see it."""
    row = await session.get(CollabSession, session_id, populate_existing=True)
    if row is None:
        raise SessionNotFound(f"no session with id {session_id}")
    return to_out(row, await engine.subtasks(session, row.id))
