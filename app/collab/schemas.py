"""Collaboration sessions on the wire: the create request and the views of a session."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from app.request_model import Integer, RequestModel, Seconds, StorableObject
from app.tasks.schemas import Name

StrategyName = Literal["map_reduce", "consensus", "chain"]
SessionStatusName = Literal["running", "succeeded", "failed", "cancelled"]


class SessionTask(RequestModel):
    """The work the session is about; every subtask inherits its type, capabilities and options."""

    type: Name
    capabilities: list[Name] = Field(
        default_factory=list,
        max_length=32,
        description="Every one is required of each subtask (chain steps name their own instead).",
    )
    payload: StorableObject = Field(default_factory=dict)
    priority: Integer = Field(default=0, ge=-1000, le=1000)
    timeout: Seconds | None = Field(default=None, description="Lease per subtask attempt.")
    max_attempts: Integer | None = Field(default=None, ge=1, le=100)

    @field_validator("capabilities")
    @classmethod
    def _dedupe(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class Participants(RequestModel):
    """Who takes part: every connected agent with the capabilities (or `count` of them), or named agents."""

    capabilities: list[Name] | None = Field(default=None, min_length=1, max_length=32)
    agent_ids: list[Name] | None = Field(default=None, min_length=1, max_length=1000)
    count: Integer | None = Field(default=None, ge=1, le=1000, description="With capabilities only.")

    @field_validator("capabilities", "agent_ids")
    @classmethod
    def _dedupe(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _one_way(self) -> Participants:
        if (self.capabilities is None) == (self.agent_ids is None):
            raise ValueError("give exactly one of capabilities or agent_ids")
        if self.count is not None and self.agent_ids is not None:
            raise ValueError("count chooses among agents found by capabilities; with agent_ids, list fewer")
        return self


class Budget(RequestModel):
    max_cost: float = Field(gt=0, description="USD; the session fails with budget_exceeded on reaching it.")


class SessionCreate(RequestModel):
    strategy: StrategyName
    task: SessionTask
    participants: Participants | None = Field(
        default=None,
        description="Omitted: map_reduce and chain subtasks go to any capable agent; consensus needs it.",
    )
    params: StorableObject = Field(default_factory=dict)
    budget: Budget | None = Field(default=None, description="Default: the per-session cost limit.")
    timeout: Seconds | None = Field(
        default=None, description="Default and upper bound: AGENT_COLLABORATION_TIMEOUT (30s, 5m or seconds)."
    )


class SubtaskOut(BaseModel):
    key: str
    task_id: uuid.UUID
    type: str
    status: str
    agent_id: str | None
    attempt: int
    output: Any
    error: dict[str, Any] | None
    cost: float
    created_at: datetime
    finished_at: datetime | None


class SessionOut(BaseModel):
    id: uuid.UUID
    strategy: StrategyName
    status: SessionStatusName
    round: int
    participants: list[str]
    task: dict[str, Any]
    params: dict[str, Any]
    budget: float | None
    cost: float
    result: Any
    error: dict[str, Any] | None
    state: dict[str, Any] = Field(description="The strategy's partial state (outputs so far, rounds, ...).")
    deadline: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    trace_id: str | None = None  # the session's trace (W3C): every step and subtask is in it
    subtasks: list[SubtaskOut] | None = Field(default=None, description="Omitted in lists.")


class SessionList(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None
