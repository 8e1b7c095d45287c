"""Tasks as clients see them: read, list, cancel, and the one view of a task (submitting is app.tasks.submit).
Services own their transactions."""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Assignment, Task, TaskEvent
from app.errors import InvalidInput, TaskConflict, TaskNotFound
from app.ownership import find_visible, visible_to
from app.security import Principal
from app.tasks.schemas import TaskOut, UsageOut
from app.tasks.states import TERMINAL, TaskStatus, transition
from app.tasks.states import TaskEvent as Ev

BUS_CHANNEL = "agentplane"


# Task ids per `done` message: NOTIFY payloads are limited to 8,000 bytes, and a burst of results committed
# together costs one message per this many tasks, never one per task.
FINISHED_PER_MESSAGE = 150
NOTIFY_ALL = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"


def finished_messages(task_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Bus messages telling every replica these tasks reached a terminal state, so their waiters (long-polls,
    SSE streams) wake at once instead of at their next poll."""
    return [
        {"k": "done", "t": [str(task_id) for task_id in task_ids[i : i + FINISHED_PER_MESSAGE]]}
        for i in range(0, len(task_ids), FINISHED_PER_MESSAGE)
    ]


async def notify_finished(session: AsyncSession, task_ids: Sequence[uuid.UUID]) -> None:
    for message in finished_messages(task_ids):
        await notify(session, message)


async def notify(session: AsyncSession, message: dict[str, Any]) -> None:
    """NOTIFY is transactional: it reaches the other replicas only if (and when) this transaction commits."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": BUS_CHANNEL, "payload": orjson.dumps(message).decode()},
    )


async def get_task(
    session: AsyncSession, task_id: uuid.UUID, *, viewer: Principal, lock: bool = False
) -> Task:
    """The task, if ``viewer`` may see it; otherwise the same 404 as for an id that does not exist."""
    task = await find_visible(session, Task, task_id, viewer=viewer, lock=lock)
    if task is None:
        raise TaskNotFound(f"no task with id {task_id}")
    return task


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        stamp, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), uuid.UUID(row_id)
    except ValueError:
        raise InvalidInput(
            "cursor is not one this API returned",
            errors=[{"field": "query.cursor", "message": "invalid cursor", "type": "value_error"}],
        ) from None


async def list_tasks(
    session: AsyncSession,
    *,
    viewer: Principal,
    status: str | None,
    task_type: str | None,
    agent_id: str | None,
    session_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Task], str | None]:
    query = select(Task)
    if (visible := visible_to(viewer, Task)) is not None:
        query = query.where(visible)
    if status:
        query = query.where(Task.status == status)
    if task_type:
        query = query.where(Task.type == task_type)
    if agent_id:
        query = query.where(Task.agent_id == agent_id)
    if session_id:
        query = query.where(Task.session_id == session_id)
    if cursor:
        stamp, row_id = decode_cursor(cursor)
        query = query.where(or_(Task.created_at < stamp, and_(Task.created_at == stamp, Task.id < row_id)))
    rows = list(
        await session.scalars(query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1))
    )
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def cancel_task(
    session: AsyncSession, task_id: uuid.UUID, *, viewer: Principal, reason: str = "cancelled by client"
) -> Task:
    task = await get_task(session, task_id, viewer=viewer, lock=True)
    if task.status in TERMINAL:
        raise TaskConflict(f"the task is already {task.status}; only open tasks can be cancelled")
    await cancel_open_task(session, task, reason=reason)
    await notify_finished(session, [task.id])
    await session.commit()
    return task


async def cancel_open_task(session: AsyncSession, task: Task, *, reason: str) -> None:
    """Cancel ``task`` (locked by the caller) in the caller's transaction; its agent hears on commit."""
    previous = task.status
    task.status = transition(previous, Ev.CANCEL).value
    task.finished_at = func.now()
    task.updated_at = func.now()
    task.lease_expires_at = None
    task.error = {"code": "cancelled", "message": reason}
    if task.assignment_id is not None and previous != TaskStatus.PENDING:
        assignment = await session.get(Assignment, task.assignment_id, with_for_update=True)
        if assignment is not None and assignment.status in {"assigned", "running"}:
            assignment.status = "cancelled"
            assignment.finished_at = func.now()
            assignment.reason = reason
            await notify(
                session,
                {
                    "k": "cancel",
                    "agent": assignment.agent_id,
                    "assignment": str(assignment.id),
                    "reason": reason,
                },
            )
    session.add(
        TaskEvent(
            task_id=task.id, kind="transition", from_status=previous, to_status=task.status, reason=reason
        )
    )
    await session.flush()
    await session.refresh(task)


async def list_assignments(
    session: AsyncSession, task_id: uuid.UUID, *, viewer: Principal
) -> list[Assignment]:
    await get_task(session, task_id, viewer=viewer)
    query = (
        select(Assignment)
        .where(Assignment.task_id == task_id)
        .order_by(Assignment.assigned_at, Assignment.id)
    )
    return list(await session.scalars(query))


async def events_after(
    session: AsyncSession, task_id: uuid.UUID, after_id: int, limit: int = 500
) -> list[TaskEvent]:
    query = (
        select(TaskEvent)
        .where(TaskEvent.task_id == task_id, TaskEvent.id > after_id)
        .order_by(TaskEvent.id)
        .limit(limit)
    )
    return list(await session.scalars(query))


def to_out(task: Task) -> TaskOut:
    return _out(functools.partial(getattr, task))


def out_of_row(row: Mapping[str, Any]) -> TaskOut:
    """A task as the API shows it, from a row of `tasks` read without the ORM."""
    return _out(row.__getitem__)


# TaskOut's fields are the task's columns, but for these: the one mapping from the table to the response (a
# test checks that every field of TaskOut is either here or a column of `tasks` of the same name).
_RENAMED = {"capabilities": "required_capabilities"}
_USAGE = ("input_tokens", "output_tokens", "cost")
_DERIVED = ("usage", "waiting")  # not columns: usage groups three, waiting is computed on a read by id
_COLUMNS = tuple((name, _RENAMED.get(name, name)) for name in TaskOut.model_fields if name not in _DERIVED)


def _out(field: Callable[[str], Any]) -> TaskOut:
    # model_construct: these values come from the database, typed by its schema; validating them again cost
    # a tenth of the server's CPU in a burst of batch submissions.
    values = {name: field(column) for name, column in _COLUMNS}
    values["usage"] = UsageOut.model_construct(**{name: field(name) for name in _USAGE})
    return TaskOut.model_construct(**values)
