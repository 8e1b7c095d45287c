"""Every stored status, as enums shared by Python and SQL.

The database holds these as text with a CHECK constraint built from the same enum (app.db.models and the
migration `0003_status_checks`), so a misspelt status in a hand-written statement fails at the write, and
code compares against the enum instead of a bare string. Pure: no imports from the rest of the app.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class AssignmentStatus(StrEnum):
    """One attempt. Open: assigned, running. The rest say how it ended."""

    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"  # the agent declined it (no attempt charged)
    LOST = "lost"  # the agent, its socket or its replica went away; the work was requeued
    TIMED_OUT = "timed_out"  # the lease lapsed
    SUPERSEDED = "superseded"  # its answer came after the task had moved on
    CANCELLED = "cancelled"


class AgentStatus(StrEnum):
    """As stored; `busy` is derived when an active agent's slots are full (docs/decisions.md). There is no
    `registering`: registration is one transaction, so no reader could ever see it (docs/decisions.md)."""

    ACTIVE = "active"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"
    OFFLINE = "offline"
    ERROR = "error"
    QUARANTINED = "quarantined"  # its leases lapsed too often in a row: skipped by routing until a cool-down


class AgentTransport(StrEnum):
    """How the control plane reaches an agent: its WebSocket, or A2A calls from the owner replica."""

    WEBSOCKET = "websocket"
    A2A = "a2a"


class SessionStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def check_sql(column: str, statuses: type[StrEnum]) -> str:
    """The CHECK expression admitting exactly the enum's values."""
    return f"{column} IN ({', '.join(repr(str(member.value)) for member in statuses)})"
