"""The replicas sharing this database, as the registry sees them (GET /api/v1/replicas)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Agent, Assignment, Replica
from app.replicas.schemas import ReplicaList, ReplicaOut
from app.statuses import AgentStatus, AssignmentStatus


async def list_replicas(session: AsyncSession, *, dead_after: float) -> ReplicaList:
    agents = (
        select(func.count())
        .where(Agent.replica_id == Replica.id, Agent.status != AgentStatus.OFFLINE.value)
        .scalar_subquery()
    )
    leases = (
        select(func.count())
        .where(
            Assignment.replica_id == Replica.id,
            Assignment.status.in_([AssignmentStatus.ASSIGNED.value, AssignmentStatus.RUNNING.value]),
        )
        .scalar_subquery()
    )
    alive = Replica.heartbeat_at >= func.now() - timedelta(seconds=dead_after)
    rows = await session.execute(
        select(Replica.id, Replica.started_at, Replica.heartbeat_at, alive, agents, leases).order_by(
            Replica.id
        )
    )
    return ReplicaList(
        items=[
            ReplicaOut(
                id=replica_id,
                started_at=started,
                heartbeat_at=heartbeat,
                alive=is_alive,
                connected_agents=connected,
                leases_held=held,
            )
            for replica_id, started, heartbeat, is_alive, connected, held in rows.tuples()
        ]
    )
