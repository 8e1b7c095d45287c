"""Tokens and cost, from every finished attempt (a retried task's failed attempts cost money too).

A client key's report covers the tasks it may see (app.ownership: its own, or its project's); an admin's
covers every task."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Assignment, Task
from app.ownership import visible_to
from app.security import Principal
from app.usage.schemas import UsageGroup, UsageReport, UsageRow


async def usage(
    session: AsyncSession, *, viewer: Principal, group_by: UsageGroup, since: datetime | None
) -> UsageReport:
    key = {"model": Assignment.model, "agent": Assignment.agent_id, "task_type": Task.type}[group_by]
    query = (
        select(
            key,
            func.count(),
            func.coalesce(func.sum(Assignment.input_tokens), 0),
            func.coalesce(func.sum(Assignment.output_tokens), 0),
            func.coalesce(func.sum(Assignment.cost), 0.0),
        )
        .join(Task, Task.id == Assignment.task_id)
        .where(Assignment.finished_at.is_not(None))
        .group_by(key)
        .order_by(key)
    )
    if since is not None:
        query = query.where(Assignment.finished_at >= since)
    if (visible := visible_to(viewer, Task)) is not None:
        query = query.where(visible)
    rows = [
        UsageRow(key=str(k), attempts=n, input_tokens=int(i), output_tokens=int(o), cost=float(c))
        for k, n, i, o, c in (await session.execute(query)).tuples()
    ]
    total = UsageRow(
        key="total",
        attempts=sum(r.attempts for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost=sum(r.cost for r in rows),
    )
    return UsageReport(group_by=group_by, since=since, items=rows, total=total)
