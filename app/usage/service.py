"""Tokens and cost, from every finished attempt (a retried task's failed attempts cost money too).

A client key's report covers the tasks it may see (app.ownership: its own, or its project's); an admin's
covers every task."""

from __future__ import annotations

import math
import sys
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Assignment, Task
from app.gateway.protocol import MAX_USAGE_COST
from app.ownership import visible_to
from app.security import Principal
from app.storable import INT_MAX
from app.usage.schemas import UsageGroup, UsageReport, UsageRow


async def usage(
    session: AsyncSession, *, viewer: Principal, group_by: UsageGroup, since: datetime | None
) -> UsageReport:
    key = {"model": Assignment.model, "agent": Assignment.agent_id, "task_type": Task.type}[group_by]
    query = (
        select(
            key,
            func.count(),
            # Sums of BIGINT are NUMERIC (no overflow); a cost is summed with each row at most the wire's
            # bound, so rows stored before the bound existed cannot overflow the sum either.
            func.coalesce(func.sum(Assignment.input_tokens), 0),
            func.coalesce(func.sum(Assignment.output_tokens), 0),
            func.coalesce(func.sum(func.least(Assignment.cost, MAX_USAGE_COST)), 0.0),
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
        UsageRow(key=str(k), attempts=n, input_tokens=_count(i), output_tokens=_count(o), cost=_cost(c))
        for k, n, i, o, c in (await session.execute(query)).tuples()
    ]
    total = UsageRow(
        key="total",
        attempts=sum(r.attempts for r in rows),
        input_tokens=_count(sum(r.input_tokens for r in rows)),
        output_tokens=_count(sum(r.output_tokens for r in rows)),
        cost=_cost(sum(r.cost for r in rows)),
    )
    return UsageReport(group_by=group_by, since=since, items=rows, total=total)


def _count(value: Any) -> int:
    """A token total, at most BIGINT's maximum (what JSON clients and the columns can hold)."""
    return min(int(value), INT_MAX)


def _cost(value: Any) -> float:
    """A cost total, always finite."""
    cost = float(value)
    return cost if math.isfinite(cost) else sys.float_info.max
