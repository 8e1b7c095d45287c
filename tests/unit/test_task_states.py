from __future__ import annotations

import pytest

from app.tasks.states import (
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    TaskEvent,
    TaskStatus,
    backoff_seconds,
    transition,
)


@pytest.mark.parametrize(
    ("status", "event", "expected"),
    [
        ("pending", TaskEvent.ASSIGN, "assigned"),
        ("assigned", TaskEvent.ACCEPT, "running"),
        ("running", TaskEvent.SUCCEED, "succeeded"),
        ("assigned", TaskEvent.SUCCEED, "succeeded"),
        ("running", TaskEvent.RETRY, "pending"),
        ("assigned", TaskEvent.REJECT, "pending"),
        ("pending", TaskEvent.CANCEL, "cancelled"),
        ("running", TaskEvent.CANCEL, "cancelled"),
        ("pending", TaskEvent.TIME_OUT, "timed_out"),
        ("running", TaskEvent.TIME_OUT, "timed_out"),
    ],
)
def test_legal_transitions(status: str, event: TaskEvent, expected: str) -> None:
    assert transition(status, event) == expected


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("event", list(TaskEvent))
def test_nothing_leaves_a_terminal_state(terminal: TaskStatus, event: TaskEvent) -> None:
    with pytest.raises(IllegalTransition):
        transition(terminal, event)


@pytest.mark.parametrize(
    ("status", "event"),
    [("pending", TaskEvent.ACCEPT), ("pending", TaskEvent.SUCCEED), ("pending", TaskEvent.REJECT)],
)
def test_illegal_transitions_are_refused(status: str, event: TaskEvent) -> None:
    with pytest.raises(IllegalTransition, match=status):
        transition(status, event)


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        transition("exploded", TaskEvent.ASSIGN)


def test_every_target_is_a_known_status() -> None:
    assert {target for target in TRANSITIONS.values()} <= set(TaskStatus)


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0), (0, 1.0)])
def test_backoff_doubles_and_is_capped(attempt: int, expected: float) -> None:
    assert backoff_seconds(attempt, base=1.0, cap=60.0) == expected
