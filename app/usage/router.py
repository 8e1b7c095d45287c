from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from app.deps import ClientDep, SessionDep
from app.usage import service
from app.usage.schemas import UsageGroup, UsageReport

router = APIRouter(tags=["usage"])


@router.get("/usage", response_model=UsageReport)
async def usage(
    session: SessionDep, principal: ClientDep, group_by: UsageGroup = "model", since: datetime | None = None
) -> UsageReport:
    return await service.usage(session, viewer=principal, group_by=group_by, since=since)
