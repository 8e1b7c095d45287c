"""Every table of DESIGN section 3. The schema-drift test compares this module with the migrations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.statuses import AgentStatus, AgentTransport, AssignmentStatus, SessionStatus, TaskStatus, check_sql

Json = dict[str, Any]
# The trace id of a version-00 `traceparent` (agentplane.tracecontext writes only that version).
TRACE_ID_OF_TRACEPARENT = "substr(traceparent, 4, 32)"


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint(check_sql("status", AgentStatus), name="status"),
        CheckConstraint(check_sql("transport", AgentTransport), name="transport"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    capabilities: Mapped[list[Json]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'"))
    status: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    max_concurrency: Mapped[int] = mapped_column(Integer, nullable=False)
    replica_id: Mapped[str | None] = mapped_column(Text, index=True)
    # The API key that first registered this id; other agent keys cannot take the id over.
    owner_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    connected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    health_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    tasks_completed: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    tasks_failed: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    avg_latency_ms: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0"))
    tokens_processed: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    cost_incurred: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0"))
    created_at: Mapped[datetime] = _now()
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    transport: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'websocket'"))
    # The task types it handles (register's task_types); NULL: any type.
    task_types: Mapped[list[str] | None] = mapped_column(JSONB)
    # Leases lapsed or work lost in a row; a success resets it. Enough of them quarantine the agent until
    # quarantined_until (app.agents.record).
    consecutive_lapses: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    quarantined_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_health_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # An operator drained it: it stays draining through lost sockets and replica deaths until it says goodbye
    # (closes its socket with 1000) or is deregistered (app.agents.service).
    drain_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))


class A2AAgent(Base):
    """What an A2A agent's owner replica needs to reach it again after a restart (app.interop.a2a_registry).
    ``headers`` maps each header name to ``{"enc": <Fernet token>}`` or ``{"env": <variable name>}``: never
    the credential in clear."""

    __tablename__ = "a2a_agents"

    agent_id: Mapped[str] = mapped_column(Text, ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    card_url: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    headers: Mapped[Json] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    replica_id: Mapped[str | None] = mapped_column(Text, index=True)  # the owner: it holds the "connection"
    created_at: Mapped[datetime] = _now()


class AgentCapability(Base):
    """The capability index: one row per (agent, capability name)."""

    __tablename__ = "agent_capabilities"

    agent_id: Mapped[str] = mapped_column(Text, ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True, index=True)
    type: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    version: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))


class AgentHealthCheck(Base):
    __tablename__ = "agent_health_checks"
    __table_args__ = (Index("ix_agent_health_checks_agent_id_at", "agent_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(Text, ForeignKey("agents.id", ondelete="CASCADE"), nullable=False)
    at: Mapped[datetime] = _now()
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    duration_ms: Mapped[float | None] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)


class CollabSession(Base):
    __tablename__ = "collab_sessions"
    __table_args__ = (CheckConstraint(check_sql("status", SessionStatus), name="status"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    strategy: Mapped[str] = mapped_column(Text, nullable=False)
    spec: Mapped[Json] = mapped_column(JSONB, nullable=False)
    state: Mapped[Json] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    status: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    round: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    budget: Mapped[float | None] = mapped_column(Double)
    cost: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0"))
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[Json | None] = mapped_column(JSONB)
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    # Who created it (app.ownership): the API key and that key's project. NULL for sessions from before
    # ownership and for the environment's admin key: only admins see those.
    owner_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    project: Mapped[str | None] = mapped_column(Text)
    # The session's trace (migration 0006): every step and subtask is in it.
    traceparent: Mapped[str | None] = mapped_column(Text)
    trace_id: Mapped[str | None] = mapped_column(Text, Computed(TRACE_ID_OF_TRACEPARENT, persisted=True))


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # The dispatcher's claim query: pending work in priority order.
        Index(
            "ix_tasks_pending_queue",
            text("priority DESC"),
            "available_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # The reaper's query: open leases by expiry.
        Index(
            "ix_tasks_open_lease",
            "lease_expires_at",
            postgresql_where=text("status IN ('assigned', 'running')"),
        ),
        Index("ix_tasks_status_created_at", "status", "created_at"),
        CheckConstraint(check_sql("status", TaskStatus), name="status"),
        UniqueConstraint("session_id", "session_key", name="uq_tasks_session_id_session_key"),
        # A client's listing (app.ownership): a project's tasks, or a key's own when it has no project.
        Index(
            "ix_tasks_project_created_at",
            "project",
            "created_at",
            postgresql_where=text("project IS NOT NULL"),
        ),
        Index(
            "ix_tasks_owner_key_id_created_at",
            "owner_key_id",
            "created_at",
            postgresql_where=text("project IS NULL AND owner_key_id IS NOT NULL"),
        ),
        # An idempotency key is unique within its owner: the project when the submitting key has one, else
        # the key; rows without an owner (the env admin key, rows from before ownership) share one space.
        # Partial indexes, since NULLs are distinct in a unique index; rows without a key cost no entry.
        Index(
            "uq_tasks_project_idempotency_key",
            "project",
            "idempotency_key",
            unique=True,
            postgresql_where=text("project IS NOT NULL AND idempotency_key IS NOT NULL"),
        ),
        Index(
            "uq_tasks_owner_key_id_idempotency_key",
            "owner_key_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text(
                "project IS NULL AND owner_key_id IS NOT NULL AND idempotency_key IS NOT NULL"
            ),
        ),
        Index(
            "uq_tasks_unowned_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text("project IS NULL AND owner_key_id IS NULL AND idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    required_capabilities: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    payload: Mapped[Json] = mapped_column(JSONB, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    status: Mapped[str] = mapped_column(Text, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    timeout: Mapped[float] = mapped_column(Double, nullable=False)
    queue_timeout: Mapped[float] = mapped_column(Double, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    available_at: Mapped[datetime] = _now()
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    model: Mapped[str | None] = mapped_column(Text)
    strategy: Mapped[str | None] = mapped_column(Text)
    max_cost: Mapped[float | None] = mapped_column(Double)
    estimated_tokens: Mapped[int | None] = mapped_column(Integer)
    # Capability name -> the lowest version an agent may declare for it (compared as dotted numbers).
    min_versions: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    # Models tried in order once attempts on `model` have failed (app.routing.strategies.model_for_attempt).
    fallback_models: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # When set, only these agents may take the task (session participants, or a client's pin).
    agent_ids: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    agent_id: Mapped[str | None] = mapped_column(Text, index=True)
    assignment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[Json | None] = mapped_column(JSONB)
    input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    cost: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0"))
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    # Who submitted it (app.ownership): the API key and that key's project; a session's subtasks are its
    # owner's. NULL for tasks from before ownership and for the environment's admin key: admins only.
    owner_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    project: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("collab_sessions.id", ondelete="SET NULL"), index=True
    )
    # The subtask's key within its session; unique, so a resumed session never submits a subtask twice.
    session_key: Mapped[str | None] = mapped_column(Text)
    # W3C trace context (migration 0006): the parent of the server's spans for this task, and its trace id.
    traceparent: Mapped[str | None] = mapped_column(Text)
    trace_id: Mapped[str | None] = mapped_column(Text, Computed(TRACE_ID_OF_TRACEPARENT, persisted=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))


class Assignment(Base):
    """One attempt of a task on one agent. Its id fences results."""

    __tablename__ = "assignments"
    __table_args__ = (
        Index(
            "ix_assignments_open_by_agent",
            "agent_id",
            postgresql_where=text("status IN ('assigned', 'running')"),
        ),
        Index("ix_assignments_finished_at", "finished_at"),
        CheckConstraint(check_sql("status", AssignmentStatus), name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, index=True
    )
    agent_id: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False)  # the agent's model when leased: usage by model
    replica_id: Mapped[str] = mapped_column(Text, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    assigned_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    latency_ms: Mapped[float | None] = mapped_column(Double)
    input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    cost: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0"))
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[Json | None] = mapped_column(JSONB)
    reason: Mapped[str | None] = mapped_column(Text)


class TaskEvent(Base):
    """Append-only audit trail of transitions and progress; the SSE source (its id is the event id)."""

    __tablename__ = "task_events"
    __table_args__ = (Index("ix_task_events_task_id_id", "task_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    from_status: Mapped[str | None] = mapped_column(Text)
    to_status: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    data: Mapped[Json | None] = mapped_column(JSONB)
    at: Mapped[datetime] = _now()


class SessionEvent(Base):
    """Append-only trail of a collaboration session (rounds, subtasks, outcome); the session SSE source."""

    __tablename__ = "session_events"
    __table_args__ = (Index("ix_session_events_session_id_id", "session_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("collab_sessions.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[Json | None] = mapped_column(JSONB)
    at: Mapped[datetime] = _now()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    secret_hash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    # Keys of one project share their tasks and sessions (app.ownership); NULL: the key's own only.
    project: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Replica(Base):
    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    started_at: Mapped[datetime] = _now()
    heartbeat_at: Mapped[datetime] = _now()
