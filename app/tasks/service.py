"""Tasks as clients see them: submit, read, list, cancel. Services own their transactions."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.models import Assignment, Task, TaskEvent
from app.errors import InvalidInput, TaskConflict, TaskNotFound
from app.tasks.schemas import TaskCreate, TaskOut, UsageOut
from app.tasks.states import TERMINAL, TaskStatus, transition
from app.tasks.states import TaskEvent as Ev

BUS_CHANNEL = "agentplane"
_INSERT_TASKS = insert(Task).on_conflict_do_nothing().returning(Task)
_FRAME_OVERHEAD = 4096  # room for the assign frame's other fields around the payload


async def notify(session: AsyncSession, message: dict[str, Any]) -> None:
    """NOTIFY is transactional: it reaches the other replicas only if (and when) this transaction commits."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": BUS_CHANNEL, "payload": orjson.dumps(message).decode()},
    )


def _row(
    spec: TaskCreate,
    settings: Settings,
    *,
    now: datetime,
    session_id: uuid.UUID | None,
    session_key: str | None,
) -> dict[str, Any]:
    size = len(orjson.dumps(spec.payload))
    limit = settings.max_message_bytes - _FRAME_OVERHEAD
    if size > limit:
        raise InvalidInput(
            f"payload is {size} bytes; a task payload may be at most {limit} bytes "
            f"(AGENT_MAX_MESSAGE_BYTES less the frame's envelope)",
            errors=[{"field": "payload", "message": f"at most {limit} bytes", "type": "too_large"}],
        )
    queue_timeout = spec.queue_timeout or settings.queue_timeout
    return {
        "id": uuid.uuid4(),
        "type": spec.type,
        "required_capabilities": spec.capabilities,
        "payload": spec.payload,
        "priority": spec.priority,
        "status": TaskStatus.PENDING.value,
        "attempt": 0,
        "max_attempts": spec.max_attempts or settings.max_attempts,
        "timeout": spec.timeout or settings.task_timeout,
        "queue_timeout": queue_timeout,
        "created_at": now,
        "updated_at": now,
        "available_at": now,
        "expires_at": now + timedelta(seconds=queue_timeout),
        "model": spec.model,
        "strategy": spec.strategy,
        "max_cost": spec.max_cost,
        "estimated_tokens": spec.estimated_tokens,
        "agent_ids": spec.agent_ids,
        "idempotency_key": spec.idempotency_key,
        "session_id": session_id,
        "session_key": session_key,
    }


async def insert_tasks(
    session: AsyncSession,
    settings: Settings,
    specs: Sequence[TaskCreate],
    *,
    session_id: uuid.UUID | None = None,
    session_keys: Sequence[str] | None = None,
) -> list[tuple[Task, bool]]:
    """Insert without committing; returns each task in order, and whether it is new (not a repeat)."""
    keys = list(session_keys) if session_keys is not None else [None] * len(specs)
    # Timestamps from the database's clock (leases and timeouts are measured by it), read once.
    now: datetime | None = await session.scalar(select(func.now()))
    assert now is not None
    rows = [
        _row(spec, settings, now=now, session_id=session_id, session_key=key)
        for spec, key in zip(specs, keys, strict=True)
    ]
    # One fixed statement executed for many rows: SQLAlchemy caches its compiled form, which a multi-row
    # VALUES literal (a new statement per batch size) would not get.
    created = {task.id: task for task in await session.scalars(_INSERT_TASKS, rows)}
    if created:
        await session.execute(
            insert(TaskEvent),
            [
                {"task_id": task_id, "kind": "transition", "to_status": "pending", "reason": "submitted"}
                for task_id in created
            ],
        )
        await notify(session, {"k": "work"})
    if len(created) == len(rows):
        return [(created[row["id"]], True) for row in rows]
    return [await _existing_or_created(session, row, created) for row in rows]


async def _existing_or_created(
    session: AsyncSession, row: dict[str, Any], created: dict[uuid.UUID, Task]
) -> tuple[Task, bool]:
    if row["id"] in created:
        return created[row["id"]], True
    if row["idempotency_key"] is not None:
        condition = Task.idempotency_key == row["idempotency_key"]
    else:
        condition = and_(Task.session_id == row["session_id"], Task.session_key == row["session_key"])
    existing = await session.scalar(select(Task).where(condition))
    if existing is None:  # the conflicting row vanished between the insert and this read
        raise TaskConflict("the task conflicted with another being written; retry the request")
    return existing, False


async def submit(session: AsyncSession, settings: Settings, spec: TaskCreate) -> tuple[Task, bool]:
    [(task, created)] = await insert_tasks(session, settings, [spec])
    await session.commit()
    return task, created


async def submit_batch(session: AsyncSession, settings: Settings, specs: Sequence[TaskCreate]) -> list[Task]:
    results = await insert_tasks(session, settings, specs)
    await session.commit()
    return [task for task, _ in results]


async def get_task(session: AsyncSession, task_id: uuid.UUID) -> Task:
    task = await session.get(Task, task_id, populate_existing=True)
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
    status: str | None,
    task_type: str | None,
    agent_id: str | None,
    session_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Task], str | None]:
    query = select(Task)
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
    session: AsyncSession, task_id: uuid.UUID, *, reason: str = "cancelled by client"
) -> Task:
    task = await session.get(Task, task_id, with_for_update=True, populate_existing=True)
    if task is None:
        raise TaskNotFound(f"no task with id {task_id}")
    if task.status in TERMINAL:
        raise TaskConflict(f"the task is already {task.status}; only open tasks can be cancelled")
    await cancel_open_task(session, task, reason=reason)
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


async def list_assignments(session: AsyncSession, task_id: uuid.UUID) -> list[Assignment]:
    await get_task(session, task_id)
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
    return TaskOut(
        id=task.id,
        type=task.type,
        capabilities=task.required_capabilities,
        payload=task.payload,
        priority=task.priority,
        status=task.status,
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        timeout=task.timeout,
        queue_timeout=task.queue_timeout,
        model=task.model,
        strategy=task.strategy,
        max_cost=task.max_cost,
        estimated_tokens=task.estimated_tokens,
        agent_ids=task.agent_ids,
        agent_id=task.agent_id,
        assignment_id=task.assignment_id,
        result=task.result,
        error=task.error,
        usage=UsageOut(input_tokens=task.input_tokens, output_tokens=task.output_tokens, cost=task.cost),
        idempotency_key=task.idempotency_key,
        session_id=task.session_id,
        created_at=task.created_at,
        updated_at=task.updated_at,
        available_at=task.available_at,
        assigned_at=task.assigned_at,
        lease_expires_at=task.lease_expires_at,
        expires_at=task.expires_at,
        finished_at=task.finished_at,
    )
