"""Read models of the registry: lists, details, the capability index, fleet totals."""

from __future__ import annotations

import base64

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.schemas import (
    AgentDetail,
    AgentList,
    AgentMetricsOut,
    AgentOut,
    CapabilityIndex,
    CapabilityOut,
    HealthCheckOut,
    RegistryMetrics,
)
from app.agents.service import open_assignment_counts
from app.db.models import Agent, AgentCapability, AgentHealthCheck, Assignment
from app.errors import AgentNotFound, InvalidInput

ROUTABLE = ("active",)


def shown_status(agent: Agent, active_tasks: int) -> str:
    """`busy` is derived, not stored: an active agent whose open assignments fill its concurrency."""
    if agent.status == "active" and active_tasks >= agent.max_concurrency:
        return "busy"
    return agent.status


async def fleet_by_status(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(model, status, agents) for the whole fleet, with `busy` derived as `shown_status` does."""
    open_work = (
        select(Assignment.agent_id, func.count().label("open"))
        .where(Assignment.status.in_(("assigned", "running")))  # the partial index's predicate
        .group_by(Assignment.agent_id)
        .subquery()
    )
    full = and_(Agent.status == "active", func.coalesce(open_work.c.open, 0) >= Agent.max_concurrency)
    status = case((full, "busy"), else_=Agent.status)
    rows = await session.execute(
        select(Agent.model, status, func.count())
        .outerjoin(open_work, open_work.c.agent_id == Agent.id)
        .group_by(Agent.model, status)
    )
    return [(model, shown, count) for model, shown, count in rows.tuples()]


def to_out(agent: Agent, active_tasks: int) -> AgentOut:
    done = agent.tasks_completed + agent.tasks_failed
    return AgentOut(
        id=agent.id,
        name=agent.name,
        model=agent.model,
        status=shown_status(agent, active_tasks),
        transport=agent.transport,
        capabilities=agent.capabilities,
        task_types=agent.task_types,
        max_concurrency=agent.max_concurrency,
        replica_id=agent.replica_id,
        connected_at=agent.connected_at,
        last_seen_at=agent.last_seen_at,
        last_health_check_at=agent.last_health_check_at,
        consecutive_lapses=agent.consecutive_lapses,
        quarantined_until=agent.quarantined_until if agent.status == "quarantined" else None,
        created_at=agent.created_at,
        metrics=AgentMetricsOut(
            tasks_completed=agent.tasks_completed,
            tasks_failed=agent.tasks_failed,
            success_rate=agent.tasks_completed / done if done else 1.0,
            avg_latency_ms=agent.avg_latency_ms,
            tokens_processed=agent.tokens_processed,
            cost_incurred=agent.cost_incurred,
            current_load=min(1.0, active_tasks / agent.max_concurrency) if agent.max_concurrency else 1.0,
            active_tasks=active_tasks,
        ),
    )


def _cursor(agent_id: str) -> str:
    return base64.urlsafe_b64encode(agent_id.encode()).decode()


def _after(cursor: str) -> str:
    try:
        after = base64.urlsafe_b64decode(cursor.encode()).decode()
        if "\x00" in after:  # no agent id holds one, and PostgreSQL refuses it in a parameter
            raise ValueError("NUL")
        return after
    except ValueError:
        raise InvalidInput(
            "cursor is not one this API returned",
            errors=[{"field": "query.cursor", "message": "invalid cursor", "type": "value_error"}],
        ) from None


async def list_agents(
    session: AsyncSession,
    *,
    capability: str | None,
    model: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> AgentList:
    query = select(Agent)
    if capability:
        query = query.where(
            Agent.id.in_(select(AgentCapability.agent_id).where(AgentCapability.name == capability))
        )
    if model:
        query = query.where(Agent.model == model)
    if status and status != "busy":
        query = query.where(Agent.status == status)
    elif status == "busy":
        query = query.where(Agent.status == "active")
    if cursor:
        query = query.where(Agent.id > _after(cursor))
    agents = list(await session.scalars(query.order_by(Agent.id).limit(limit + 1)))
    counts = await open_assignment_counts(session, [agent.id for agent in agents])
    items = [to_out(agent, counts.get(agent.id, 0)) for agent in agents[:limit]]
    if status == "busy":
        items = [item for item in items if item.status == "busy"]
    next_cursor = _cursor(agents[limit - 1].id) if len(agents) > limit else None
    return AgentList(items=items, next_cursor=next_cursor)


async def get_agent(session: AsyncSession, agent_id: str) -> AgentDetail:
    # One snapshot for the row, its counts and its checks: a health round commits the check and the row's
    # `last_health_check_at` together, and the view must not show one without the other.
    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    agent = await session.get(Agent, agent_id, populate_existing=True)
    if agent is None:
        raise AgentNotFound(f"no agent with id {agent_id}")
    counts = await open_assignment_counts(session, [agent_id])
    checks = await session.scalars(
        select(AgentHealthCheck)
        .where(AgentHealthCheck.agent_id == agent_id)
        .order_by(AgentHealthCheck.id.desc())
        .limit(100)
    )
    base = to_out(agent, counts.get(agent_id, 0))
    return AgentDetail(
        **base.model_dump(),
        health_failures=agent.health_failures,
        health_checks=[
            HealthCheckOut(at=c.at, ok=c.ok, duration_ms=c.duration_ms, error=c.error) for c in checks
        ],
    )


async def capability_index(session: AsyncSession) -> CapabilityIndex:
    rows = await session.execute(
        select(
            AgentCapability.name,
            func.array_agg(AgentCapability.agent_id.distinct()),
            func.count(Agent.id.distinct()).filter(Agent.status.in_(ROUTABLE)),
        )
        .join(Agent, Agent.id == AgentCapability.agent_id)
        .group_by(AgentCapability.name)
        .order_by(AgentCapability.name)
    )
    return CapabilityIndex(
        items=[
            CapabilityOut(name=name, agents=sorted(agents), active_agents=active)
            for name, agents, active in rows.tuples()
        ]
    )


async def registry_metrics(session: AsyncSession) -> RegistryMetrics:
    by_model = dict(
        (await session.execute(select(Agent.model, func.count()).group_by(Agent.model))).tuples().all()
    )
    by_status = dict(
        (await session.execute(select(Agent.status, func.count()).group_by(Agent.status))).tuples().all()
    )
    unique = await session.scalar(select(func.count(AgentCapability.name.distinct())))
    return RegistryMetrics(
        total_agents=sum(by_model.values()),
        agents_by_model=by_model,
        agents_by_status=by_status,
        unique_capabilities=unique or 0,
    )
