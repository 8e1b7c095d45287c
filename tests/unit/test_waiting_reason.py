"""Why a pending task waits, while it is not yet due again: after a refusal, or after a failed attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from app.db.models import Task
from app.tasks.schemas import RefusalOut
from app.tasks.waiting import _reason

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
AGENT: dict[str, Any] = {
    "id": "picky", "model": "m", "status": "active", "task_types": None, "max_concurrency": 2, "open": 0,
    "versions": {},
}  # fmt: skip


def waiting_task() -> Task:
    fields: dict[str, Any] = {
        "type": "chore",
        "required_capabilities": ["refused"],
        "agent_ids": None,
        "min_versions": None,
        "available_at": NOW + timedelta(seconds=1),  # not due yet
    }
    return cast(Task, SimpleNamespace(**fields))


def test_a_task_not_due_after_a_refusal_says_who_refused_it_and_why() -> None:
    refusals = [RefusalOut(agent_id="picky", at=NOW, reason="not my kind of chore")]
    reason, eligible = _reason(waiting_task(), None, NOW, 1, 1, [AGENT], refusals, refused_last=True)
    assert reason.endswith("(a short wait after picky refused it: not my kind of chore)")
    assert eligible == 1


def test_a_task_not_due_after_a_failure_says_it_is_backing_off() -> None:
    # It was refused once before; its last attempt failed since.
    refusals = [RefusalOut(agent_id="picky", at=NOW - timedelta(seconds=30), reason="busy")]
    reason, _ = _reason(waiting_task(), None, NOW, 1, 1, [AGENT], refusals, refused_last=False)
    assert reason.endswith("(backoff after a failed attempt)")
