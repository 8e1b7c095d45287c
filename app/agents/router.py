from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from app.agents import queries, service
from app.agents.schemas import (
    AgentDetail,
    AgentList,
    AgentOut,
    AgentStatusName,
    CapabilityIndex,
    RegistryMetrics,
)
from app.deps import AdminDep, ReaderDep, SessionDep

router = APIRouter(tags=["agents"])


@router.get("/agents", response_model=AgentList)
async def list_agents(
    session: SessionDep,
    _: ReaderDep,
    capability: str | None = None,
    model: str | None = None,
    status: AgentStatusName | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AgentList:
    return await queries.list_agents(
        session, capability=capability, model=model, status=status, cursor=cursor, limit=limit
    )


@router.get("/agents/{agent_id}", response_model=AgentDetail)
async def get_agent(agent_id: str, session: SessionDep, _: ReaderDep) -> AgentDetail:
    return await queries.get_agent(session, agent_id)


@router.post("/agents/{agent_id}/drain", response_model=AgentOut)
async def drain_agent(agent_id: str, session: SessionDep, _: AdminDep) -> AgentOut:
    await service.drain(session, agent_id)
    return await queries.get_agent(session, agent_id)


@router.post("/agents/{agent_id}/release", response_model=AgentOut)
async def release_agent(agent_id: str, session: SessionDep, _: AdminDep) -> AgentOut:
    """End a quarantine (app.agents.service.release): the agent is offered work again."""
    await service.release(session, agent_id)
    return await queries.get_agent(session, agent_id)


@router.delete("/agents/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def deregister_agent(agent_id: str, session: SessionDep, _: AdminDep) -> None:
    await service.deregister(session, agent_id)


@router.get("/capabilities", response_model=CapabilityIndex)
async def capabilities(session: SessionDep, _: ReaderDep) -> CapabilityIndex:
    return await queries.capability_index(session)


@router.get("/registry/metrics", response_model=RegistryMetrics)
async def registry_metrics(session: SessionDep, _: ReaderDep) -> RegistryMetrics:
    return await queries.registry_metrics(session)
