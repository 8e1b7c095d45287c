from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

AgentStatusName = Literal["active", "busy", "draining", "offline", "error", "unhealthy", "quarantined"]


class AgentMetricsOut(BaseModel):
    tasks_completed: int
    tasks_failed: int
    success_rate: float
    avg_latency_ms: float
    tokens_processed: int
    cost_incurred: float
    current_load: float  # open assignments / max_concurrency
    active_tasks: int


class AgentOut(BaseModel):
    id: str
    name: str
    model: str
    status: AgentStatusName
    transport: Literal["websocket", "a2a"] = "websocket"  # a2a: called by the server (docs/interop.md)
    capabilities: list[dict[str, Any]]
    task_types: list[str] | None  # the task types it handles; null: any
    max_concurrency: int
    replica_id: str | None
    connected_at: datetime | None
    last_seen_at: datetime | None
    last_health_check_at: datetime | None  # its last ping, answered or not
    consecutive_lapses: int  # leases lapsed or work lost in a row; a success resets it
    quarantined_until: datetime | None  # while quarantined: when it is offered work again
    created_at: datetime
    metrics: AgentMetricsOut


class HealthCheckOut(BaseModel):
    at: datetime
    ok: bool
    duration_ms: float | None
    error: str | None


class AgentDetail(AgentOut):
    health_failures: int
    health_checks: list[HealthCheckOut]


class AgentList(BaseModel):
    items: list[AgentOut]
    next_cursor: str | None


class CapabilityOut(BaseModel):
    name: str
    agents: list[str]
    active_agents: int


class CapabilityIndex(BaseModel):
    items: list[CapabilityOut]


class RegistryMetrics(BaseModel):
    """The seed's RegistryMetrics."""

    total_agents: int
    agents_by_model: dict[str, int]
    agents_by_status: dict[str, int]
    unique_capabilities: int
