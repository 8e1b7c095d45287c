from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agentplane import tracecontext
from app.request_model import Integer, RequestModel, Seconds, StorableObject
from app.storable import StorableText

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Version = Annotated[str, Field(pattern=r"^v?[0-9]{1,9}(\.[0-9]{1,9}){0,7}$", description="e.g. 1.2 or 2.0.1")]
TaskStatusName = Literal["pending", "assigned", "running", "succeeded", "failed", "cancelled", "timed_out"]
StrategyName = Literal["capability_based", "round_robin", "least_loaded"]


class TaskCreate(RequestModel):
    type: Name
    capabilities: list[Name] = Field(min_length=1, max_length=32, description="Every one is required.")
    payload: StorableObject = Field(default_factory=dict)
    priority: Integer = Field(default=0, ge=-1000, le=1000, description="Higher runs first.")
    timeout: Seconds | None = Field(default=None, description="Lease per attempt (30s, 5m or seconds).")
    queue_timeout: Seconds | None = Field(default=None, description="How long it may wait for an agent.")
    max_attempts: Integer | None = Field(default=None, ge=1, le=100)
    max_cost: float | None = Field(
        default=None, gt=0, description="USD; agents estimated dearer are skipped."
    )
    estimated_tokens: Integer | None = Field(default=None, ge=0, le=100_000_000)
    model: StorableText | None = Field(default=None, min_length=1, max_length=128)
    fallback_models: list[Annotated[StorableText, Field(min_length=1, max_length=128)]] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Tried in order, one attempt each, once AGENT_FALLBACK_AFTER attempts on `model` failed.",
    )
    min_versions: dict[Name, Version] | None = Field(
        default=None,
        max_length=32,
        description="Capability -> the lowest version an agent must declare for it (dotted numbers).",
    )
    strategy: StrategyName | None = None
    agent_ids: list[Name] | None = Field(default=None, min_length=1, max_length=1000)
    idempotency_key: StorableText | None = Field(default=None, min_length=1, max_length=200)
    traceparent: str | None = Field(
        default=None,
        max_length=tracecontext.MAX_LENGTH,
        description="W3C trace context of this task's parent span (else the request's `traceparent` header).",
    )

    @field_validator("traceparent")
    @classmethod
    def _w3c(cls, value: str | None) -> str | None:
        # In the body it is our API's field, so a bad value is refused with its reason; the header is
        # ignored when invalid, as the W3C spec asks of a receiver (app.tracing.client_traceparent).
        if value is not None and (problem := tracecontext.problem(value)) is not None:
            raise ValueError(f"not a W3C traceparent: {problem}")
        return value

    @field_validator("capabilities")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("fallback_models")
    @classmethod
    def _after_a_model(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and not info.data.get("model"):
            raise ValueError("fallback models follow a first model: set `model` too")
        return value

    @field_validator("min_versions")
    @classmethod
    def _of_required(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        unknown = sorted(set(value or ()) - set(info.data.get("capabilities") or ()))
        if unknown:
            raise ValueError(f"not among the task's capabilities: {', '.join(unknown)}")
        return value or None


class TaskBatchCreate(RequestModel):
    tasks: list[TaskCreate] = Field(min_length=1, max_length=1000)


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    cost: float


class RefusalOut(BaseModel):
    agent_id: str
    at: datetime | None
    reason: str | None


class WaitingOut(BaseModel):
    reason: str  # one sentence: what no connected agent offers, or that the capable ones are full or refuse
    eligible_agents: int  # connected agents that could take it now or once they have room
    refusals: list[RefusalOut]  # the latest refusals, newest first


class TaskOut(BaseModel):
    id: uuid.UUID
    type: str
    capabilities: list[str]
    payload: dict[str, Any]
    priority: int
    status: TaskStatusName
    attempt: int
    max_attempts: int
    timeout: float
    queue_timeout: float
    model: str | None
    fallback_models: list[str] | None
    min_versions: dict[str, str] | None
    strategy: str | None
    max_cost: float | None
    estimated_tokens: int | None
    agent_ids: list[str] | None
    agent_id: str | None
    assignment_id: uuid.UUID | None
    result: Any
    error: dict[str, Any] | None
    usage: UsageOut
    idempotency_key: str | None
    session_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    available_at: datetime
    assigned_at: datetime | None
    lease_expires_at: datetime | None
    expires_at: datetime
    finished_at: datetime | None
    trace_id: str | None = None  # the task's trace (W3C, 32 hex digits); None when it has no trace context
    # Only on a pending task read by id: why no agent has taken it (computed then, never on submit).
    waiting: WaitingOut | None = None


class TaskList(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class TaskBatchOut(BaseModel):
    tasks: list[TaskOut]


class AssignmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    task_id: uuid.UUID
    agent_id: str
    replica_id: str
    attempt: int
    status: str
    assigned_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    latency_ms: float | None
    input_tokens: int
    output_tokens: int
    cost: float
    output: Any
    error: dict[str, Any] | None
    reason: str | None


class AssignmentList(BaseModel):
    items: list[AssignmentOut]
