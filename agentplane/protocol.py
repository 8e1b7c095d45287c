"""The agent wire protocol (DESIGN section 4): every frame as a pydantic model, discriminated on `type`, and
the close and error codes.

The server (app.gateway, which re-exports this module as app.gateway.protocol) and the SDK (agentplane.sdk)
parse frames with this same code. It depends on pydantic and orjson only, so an agent installs it without the
server. The server
parses agent frames in pydantic's strict mode (``parse_agent_frame``): `"4"` is not an integer and `true` is
not a number on the wire, where coercion would hide a client's bug; in Python the models stay lax, so SDK
code may build them from convenient types.

What storage refuses (agentplane.storable: NUL in text, integers beyond 64 bits, nesting deeper than 64) is
refused here too, and so is usage beyond its documented bounds (``MAX_USAGE_TOKENS`` per token count,
``MAX_USAGE_COST`` dollars), so that no sum of valid results can overflow a counter or make a cost infinite.
For `register`, `progress` and `reject` the models say so; a `result` is parsed first and checked
after (``result_problem``), because a result that cannot be stored still answers its assignment: the
server records it as a failure (`invalid_result`) instead of leaving the agent to resend it forever.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from agentplane.storable import StorableText, json_problem

PROTOCOL_VERSION = 1
MAX_USAGE_TOKENS = 2**53  # per count and result: ~9e15, exact in a double (JavaScript agents)
MAX_USAGE_COST = 1e9  # USD per result
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def dump(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


# ---------------------------------------------------------------- agent -> server


class CapabilitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    type: StorableText = Field(default="", max_length=64)
    version: StorableText = Field(default="", max_length=32)
    parameters: dict[str, Any] = Field(default_factory=dict)
    constraints: dict[str, Any] = Field(default_factory=dict)

    @field_validator("parameters", "constraints")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = json_problem(value)
        if problem is not None:
            raise ValueError(problem.removeprefix("value: "))
        return value


class Register(Frame):
    type: Literal["register"] = "register"
    agent_id: str | None = Field(default=None, pattern=_NAME)
    name: StorableText = Field(default="", max_length=200)
    model: StorableText = Field(min_length=1, max_length=128)
    capabilities: list[CapabilitySpec] = Field(min_length=1, max_length=256)
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    protocol: int = PROTOCOL_VERSION  # checked by the gateway: an unsupported version is closed with 4004
    # Task types the agent has handlers for; None means any (routing skips agents that name other types).
    task_types: list[Annotated[str, Field(pattern=_NAME)]] | None = Field(default=None, max_length=256)
    # Assignments the agent still runs (or holds an unacked result for) when it reconnects: their leases move
    # to this connection instead of being requeued, if they are still within the hand-over grace period.
    holding: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)

    @field_validator("capabilities")
    @classmethod
    def _unique_names(cls, value: list[CapabilitySpec]) -> list[CapabilitySpec]:
        names = [cap.name for cap in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"capability names must be unique; repeated: {', '.join(duplicates)}")
        return value


class Accept(Frame):
    type: Literal["accept"] = "accept"
    assignment_id: uuid.UUID


class Reject(Frame):
    type: Literal["reject"] = "reject"
    assignment_id: uuid.UUID
    reason: StorableText = Field(default="", max_length=1000)


class Progress(Frame):
    type: Literal["progress"] = "progress"
    assignment_id: uuid.UUID
    progress: float = Field(ge=0.0, le=1.0)
    message: StorableText = Field(default="", max_length=2000)


class ResultError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(default="error", max_length=100)
    message: str = Field(default="", max_length=10_000)
    retryable: bool = False


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost: float | None = Field(default=None, ge=0)


class Result(Frame):
    type: Literal["result"] = "result"
    assignment_id: uuid.UUID
    status: Literal["succeeded", "failed"]
    output: Any = None
    error: ResultError | None = None
    usage: Usage = Field(default_factory=Usage)


class Pong(Frame):
    type: Literal["pong"] = "pong"
    nonce: str = Field(max_length=100)


class Drain(Frame):
    type: Literal["drain"] = "drain"


class Heartbeat(Frame):
    type: Literal["heartbeat"] = "heartbeat"
    active: int = Field(default=0, ge=0)


AgentFrame = Annotated[
    Register | Accept | Reject | Progress | Result | Pong | Drain | Heartbeat, Field(discriminator="type")
]
AGENT_FRAME = TypeAdapter[AgentFrame](AgentFrame)
AGENT_FRAME_TYPES = frozenset(
    {"register", "accept", "reject", "progress", "result", "pong", "drain", "heartbeat"}
)


def parse_agent_frame(text: str | bytes) -> AgentFrame:
    """An agent frame from its JSON text, strictly typed (raises pydantic's ValidationError)."""
    return AGENT_FRAME.validate_json(text, strict=True)


def result_problem(frame: Result) -> str | None:
    """Why storage would refuse this result (``"output.items.3: ..."``), or None. Checked after parsing, so
    that a result which cannot be stored is still a result: it fails its assignment (``invalid_result``)."""
    problem = json_problem(frame.output, "output")
    if problem is None and frame.error is not None:
        problem = json_problem(frame.error.code, "error.code") or json_problem(
            frame.error.message, "error.message"
        )
    if problem is None:
        for name in ("input_tokens", "output_tokens"):
            if getattr(frame.usage, name) > MAX_USAGE_TOKENS:
                problem = f"usage.{name}: out of range (must be at most 2**53 = {MAX_USAGE_TOKENS})"
                break
    if problem is None and frame.usage.cost is not None and frame.usage.cost > MAX_USAGE_COST:
        problem = f"usage.cost: out of range (must be at most {MAX_USAGE_COST:.0e} USD)"
    return problem


def invalid_result(frame: Result, problem: str, *, keep_usage: bool = True) -> Result:
    """What is recorded instead of a result that storage refuses: a failure naming the field, not
    retryable (the same handler would produce the same output), with the usage when it can be stored."""
    usage = frame.usage if keep_usage and not problem.startswith("usage.") else Usage()
    error = ResultError(code="invalid_result", message=f"the result could not be stored: {problem}"[:10_000])
    return Result(assignment_id=frame.assignment_id, status="failed", error=error, usage=usage)


# ---------------------------------------------------------------- server -> agent


class Registered(Frame):
    type: Literal["registered"] = "registered"
    agent_id: str
    heartbeat_interval: float
    replica_id: str


class Assign(Frame):
    type: Literal["assign"] = "assign"
    assignment_id: uuid.UUID
    task_id: uuid.UUID
    task_type: str
    payload: dict[str, Any]
    timeout: float
    deadline: datetime
    attempt: int
    # W3C trace context (agentplane.tracecontext): the server's dispatch span, or the client's own
    # `traceparent` when the server does not trace. Optional: absent when the task has none; an agent that
    # does not trace ignores it.
    traceparent: str | None = None


class Cancel(Frame):
    type: Literal["cancel"] = "cancel"
    assignment_id: uuid.UUID
    reason: str = ""


class Ping(Frame):
    type: Literal["ping"] = "ping"
    nonce: str


class Ack(Frame):
    type: Literal["ack"] = "ack"
    assignment_id: uuid.UUID


class DrainRequest(Frame):
    """The server asks the agent to finish what it holds and take nothing new (operator drain)."""

    type: Literal["drain"] = "drain"
    reason: str = ""


class ErrorFrame(Frame):
    type: Literal["error"] = "error"
    code: str
    message: str
    ref: str | None = None


ServerFrame = Annotated[
    Registered | Assign | Cancel | Ping | Ack | DrainRequest | ErrorFrame, Field(discriminator="type")
]
SERVER_FRAME = TypeAdapter[ServerFrame](ServerFrame)


# ---------------------------------------------------------------- codes


class WsErrorCode(StrEnum):
    """The `code` of an `error` frame (DESIGN section 4)."""

    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHORIZED = "unauthorized"
    NOT_ALLOWED = "not_allowed"
    UNKNOWN_ASSIGNMENT = "unknown_assignment"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INVALID_RESULT = "invalid_result"  # a result storage refuses; recorded as a failure and acknowledged


class CloseCode(IntEnum):
    INTERNAL_ERROR = 1011  # an unexpected server error (not an outage); reconnect
    SERVICE_RESTART = 1012  # the server is restarting; reconnect, to another server if there is one
    TRY_AGAIN_LATER = 1013  # the database is unavailable, or the agent stopped reading; reconnect
    UNAUTHORIZED = 4001
    PROTOCOL_VIOLATION = 4002
    MODEL_NOT_ALLOWED = 4003
    UNSUPPORTED_PROTOCOL = 4004
    REPLACED = 4009
    SERVER_DRAINING = 4010
    DEREGISTERED = 4011
