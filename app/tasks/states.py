"""The task state machine: one table of legal transitions. Pure; every status change goes through here."""

from __future__ import annotations

from enum import StrEnum

from app.statuses import TaskStatus

__all__ = ["TaskStatus", "TaskEvent", "TERMINAL", "OPEN", "LEASED", "transition", "can", "backoff_seconds"]


class TaskEvent(StrEnum):
    ASSIGN = "assign"  # the dispatcher leased it to an agent
    ACCEPT = "accept"  # the agent started it
    SUCCEED = "succeed"
    FAIL = "fail"  # failed for good
    RETRY = "retry"  # back to the queue: a retryable failure, a lost agent, a lapsed lease
    REJECT = "reject"  # the agent declined it; no attempt is charged
    CANCEL = "cancel"
    TIME_OUT = "time_out"  # waited too long for an agent, or its lease lapsed with no attempts left


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT})
OPEN = frozenset({TaskStatus.PENDING, TaskStatus.ASSIGNED, TaskStatus.RUNNING})
LEASED = frozenset({TaskStatus.ASSIGNED, TaskStatus.RUNNING})

_S, _E = TaskStatus, TaskEvent
TRANSITIONS: dict[tuple[TaskStatus, TaskEvent], TaskStatus] = {
    (_S.PENDING, _E.ASSIGN): _S.ASSIGNED,
    (_S.PENDING, _E.CANCEL): _S.CANCELLED,
    (_S.PENDING, _E.TIME_OUT): _S.TIMED_OUT,
    (_S.PENDING, _E.FAIL): _S.FAILED,  # a session that fails takes its queued subtasks with it
    (_S.ASSIGNED, _E.ACCEPT): _S.RUNNING,
    (_S.ASSIGNED, _E.SUCCEED): _S.SUCCEEDED,  # a fast agent may send its result without an accept
    (_S.ASSIGNED, _E.FAIL): _S.FAILED,
    (_S.ASSIGNED, _E.RETRY): _S.PENDING,
    (_S.ASSIGNED, _E.REJECT): _S.PENDING,
    (_S.ASSIGNED, _E.CANCEL): _S.CANCELLED,
    (_S.ASSIGNED, _E.TIME_OUT): _S.TIMED_OUT,
    (_S.RUNNING, _E.SUCCEED): _S.SUCCEEDED,
    (_S.RUNNING, _E.FAIL): _S.FAILED,
    (_S.RUNNING, _E.RETRY): _S.PENDING,
    (_S.RUNNING, _E.REJECT): _S.PENDING,
    (_S.RUNNING, _E.CANCEL): _S.CANCELLED,
    (_S.RUNNING, _E.TIME_OUT): _S.TIMED_OUT,
}


class IllegalTransition(Exception):
    def __init__(self, status: str, event: str) -> None:
        super().__init__(f"a {status} task cannot {event}")
        self.status = status
        self.event = event


def transition(status: str, event: TaskEvent) -> TaskStatus:
    try:
        return TRANSITIONS[(TaskStatus(status), event)]
    except (KeyError, ValueError):
        raise IllegalTransition(status, event) from None


def can(status: str, event: TaskEvent) -> bool:
    return (status, event) in TRANSITIONS


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff for a retry after ``attempt`` charged attempts: base, 2*base, 4*base, … capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))
