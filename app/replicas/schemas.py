from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ReplicaOut(BaseModel):
    id: str = Field(description="The replica id (AGENTPLANE_REPLICA_ID; by default host:port)")
    started_at: datetime
    heartbeat_at: datetime = Field(
        description="Its last heartbeat; silent past the timeout, it is declared dead"
    )
    alive: bool = Field(description="Heartbeat within AGENTPLANE_REPLICA_TIMEOUT")
    connected_agents: int = Field(description="Agents the registry shows connected to it (not offline)")
    leases_held: int = Field(description="Open assignments (assigned or running) leased through it")


class ReplicaList(BaseModel):
    items: list[ReplicaOut]
