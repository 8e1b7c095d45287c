from __future__ import annotations

from fastapi import APIRouter, Request

from app.deps import AdminDep, SessionDep
from app.replicas import service
from app.replicas.schemas import ReplicaList

router = APIRouter(tags=["replicas"])


@router.get("/replicas", response_model=ReplicaList)
async def list_replicas(request: Request, session: SessionDep, _: AdminDep) -> ReplicaList:
    return await service.list_replicas(session, dead_after=request.app.state.settings.replica_timeout)
