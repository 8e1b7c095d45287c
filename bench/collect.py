"""After the load: wait until the server has finished our tasks, then read them back in bulk.

Completion is watched on /metrics (agentplane_tasks_finished_total for our task type: one cheap request,
counted only after each result's commit) rather than by polling tasks, which would add load of our own.
The truth is then read from the task list API: status, created_at and finished_at of every task."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from bench.agents import TASK_TYPE
from bench.stats import metric_sum

FINISHED_METRIC = "agentplane_tasks_finished_total"
_PAGE = 500  # the list API's largest page
_LOOKUPS = 200  # ids missing from the list are looked up one by one, at most this many
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TaskRow:
    status: str
    attempt: int
    created_ns: int
    assigned_ns: int | None  # of the last attempt
    finished_ns: int | None


def to_ns(stamp: str | None) -> int | None:
    """ISO-8601 from the API -> ns since the epoch (microsecond precision, as Postgres keeps it)."""
    if stamp is None:
        return None
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


async def finished_count(client: httpx.AsyncClient) -> float:
    response = await client.get("/metrics")
    response.raise_for_status()
    return metric_sum(response.text, FINISHED_METRIC, task_type=TASK_TYPE)


async def wait_finished(
    client: httpx.AsyncClient, *, expected: int, baseline: float, deadline: float
) -> bool:
    """True once `expected` more tasks of ours have finished than `baseline`; False at the deadline."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        if await finished_count(client) - baseline >= expected:
            return True
        # Rendering /metrics costs the server CPU (a series per agent); polling it is
        # plenty at 2 a second, since the end time comes from the tasks' finished_at, not from this poll.
        await asyncio.sleep(0.5)
    return False


def _row(task: dict[str, object]) -> TaskRow:
    created = to_ns(str(task["created_at"]))
    assert created is not None
    finished, assigned = task.get("finished_at"), task.get("assigned_at")
    return TaskRow(
        status=str(task["status"]),
        attempt=int(str(task["attempt"])),
        created_ns=created,
        assigned_ns=to_ns(str(assigned)) if assigned else None,
        finished_ns=to_ns(str(finished)) if finished else None,
    )


async def read_tasks(client: httpx.AsyncClient, ids: set[str], since_ns: int) -> dict[str, TaskRow]:
    """Our tasks by id: the list API newest first, paging until we pass `since_ns`, then lookups."""
    rows: dict[str, TaskRow] = {}
    cursor: str | None = None
    for _ in range(len(ids) // _PAGE + 1000):  # bounded even if other clients keep submitting
        params: dict[str, str | int] = {"type": TASK_TYPE, "limit": _PAGE}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/api/v1/tasks", params=params)
        response.raise_for_status()
        body = response.json()
        for task in body["items"]:
            if task["id"] in ids:
                rows[task["id"]] = _row(task)
        cursor = body["next_cursor"]
        oldest = to_ns(body["items"][-1]["created_at"]) if body["items"] else None
        if not cursor or len(rows) == len(ids) or (oldest is not None and oldest < since_ns):
            break
    for task_id in list(ids - rows.keys())[:_LOOKUPS]:
        response = await client.get(f"/api/v1/tasks/{task_id}")
        if response.status_code == 200:
            rows[task_id] = _row(response.json())
    return rows
