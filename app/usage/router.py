from __future__ import annotations

from fastapi import APIRouter

from app.deps import ClientDep, SessionDep
from app.usage import service
from app.usage.schemas import Since, UsageGroup, UsageReport

router = APIRouter(tags=["usage"])


@router.get("/usage", response_model=UsageReport)
async def usage(
    session: SessionDep, principal: ClientDep, group_by: UsageGroup = "model", since: Since | None = None
) -> UsageReport:
    return await service.usage(session, viewer=principal, group_by=group_by, since=since)
