"""Tasks as clients see them: submit, read, list, cancel. Services own their transactions."""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Table, and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db import raw
from app.db.models import Assignment, Task, TaskEvent
from app.errors import InvalidInput, TaskConflict, TaskNotFound
from app.ownership import Owner, find_visible, visible_to
from app.security import Principal
from app.tasks.schemas import TaskCreate, TaskOut, UsageOut
from app.tasks.states import TERMINAL, TaskStatus, transition
from app.tasks.states import TaskEvent as Ev

BUS_CHANNEL = "agentplane"
_FRAME_OVERHEAD = 4096  # room for the assign frame's other fields around the payload


async def notify(session: AsyncSession, message: dict[str, Any]) -> None:
    """NOTIFY is transactional: it reaches the other replicas only if (and when) this transaction commits."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": BUS_CHANNEL, "payload": orjson.dumps(message).decode()},
    )


_INSERTED = (
    "id", "type", "required_capabilities", "payload", "priority", "max_attempts", "timeout", "queue_timeout",
    "model", "strategy", "max_cost", "estimated_tokens", "agent_ids", "idempotency_key", "session_id",
    "session_key", "owner_key_id", "project",
)  # fmt: skip
_TYPES = tuple(raw.pg_type(cast(Table, Task.__table__).c[name]) for name in _INSERTED)
# One statement for a whole submission, whatever its size: the rows travel as one JSON document (so array
# columns need no special casing), the database's clock stamps them, their events go in beside them, and
# other replicas hear of the work when (and only if) it commits. A row that repeats an idempotency key
# (within its owner, app.ownership) or a session key is skipped here and looked up afterwards.
#
# A row may arrive already placed (``agent_id``, ``assignment_id``, ``agent_model``: a local agent had room,
# app.tasks.intake): it is inserted leased, with its assignment and both events, in the same statement, so
# the task never waits in the queue and no dispatcher round is spent on it. Only pending rows are announced.
_PLACEMENT = ("agent_id", "assignment_id", "agent_model")
_DOCUMENT_TYPES = _TYPES + ("text", "uuid", "text")
_INSERT_TASKS = f"""WITH v AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS ({", ".join(f"{n} {t}" for n, t in zip(_INSERTED + _PLACEMENT, _DOCUMENT_TYPES, strict=True))}))
        WITH ORDINALITY AS v({", ".join(_INSERTED + _PLACEMENT)}, ord)
), created AS (
    INSERT INTO tasks ({", ".join(_INSERTED)}, status, attempt, agent_id, assignment_id, assigned_at, lease_expires_at,
        created_at, updated_at, available_at, expires_at)
    SELECT {", ".join(_INSERTED)},
        CASE WHEN agent_id IS NULL THEN 'pending' ELSE 'assigned' END, CASE WHEN agent_id IS NULL THEN 0 ELSE 1 END,
        agent_id, assignment_id, CASE WHEN agent_id IS NOT NULL THEN now() END,
        CASE WHEN agent_id IS NOT NULL THEN now() + timeout * interval '1 second' END,
        now(), now(), now(), now() + queue_timeout * interval '1 second'
    FROM v ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING *
), assignments AS (
    INSERT INTO assignments (id, task_id, agent_id, model, replica_id, attempt, status, assigned_at)
    SELECT created.assignment_id, created.id, created.agent_id, v.agent_model, $4, 1, 'assigned', now()
    FROM created JOIN v ON v.id = created.id WHERE created.agent_id IS NOT NULL
), events AS (
    INSERT INTO task_events (task_id, kind, from_status, to_status, reason, data)
    SELECT task_id, 'transition', from_status, to_status, reason, data FROM (
        SELECT id AS task_id, NULL AS from_status, 'pending' AS to_status, 'submitted' AS reason,
            NULL::jsonb AS data, created_at, 0 AS step
        FROM created
        UNION ALL
        SELECT id, 'pending', 'assigned', 'assigned', jsonb_build_object('agent_id', agent_id, 'attempt', 1),
            created_at, 1
        FROM created WHERE agent_id IS NOT NULL
    ) AS e ORDER BY task_id, step
), notified AS (
    SELECT pg_notify($2, $3) FROM (SELECT 1 FROM created WHERE agent_id IS NULL LIMIT 1) AS any_pending
)
SELECT created.* FROM created, (SELECT count(*) FROM notified) AS notify_once"""  # noqa: E501


def row_of(
    spec: TaskCreate,
    settings: Settings,
    *,
    owner: Owner,
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
    return {
        "id": uuid.uuid4(),
        "type": spec.type,
        "required_capabilities": spec.capabilities,
        "payload": spec.payload,
        "priority": spec.priority,
        "max_attempts": spec.max_attempts or settings.max_attempts,
        "timeout": spec.timeout or settings.task_timeout,
        "queue_timeout": spec.queue_timeout or settings.queue_timeout,
        "model": spec.model,
        "strategy": spec.strategy,
        "max_cost": spec.max_cost,
        "estimated_tokens": spec.estimated_tokens,
        "agent_ids": spec.agent_ids,
        "idempotency_key": spec.idempotency_key,
        "session_id": session_id,
        "session_key": session_key,
        "owner_key_id": owner.key_id,
        "project": owner.project,
        "agent_id": None,  # placement: set by app.tasks.intake when a local agent takes it at once
        "assignment_id": None,
        "agent_model": None,
    }


async def insert_tasks(
    db: raw.Driver,
    settings: Settings,
    specs: Sequence[TaskCreate],
    *,
    owner: Owner,
    session_id: uuid.UUID | None = None,
    session_keys: Sequence[str] | None = None,
) -> list[tuple[TaskOut, bool]]:
    """Insert on the caller's connection (in its transaction, if any); each task in order, and whether new.
    ``owner`` comes from the principal the request was authenticated as: recording it costs no query."""
    keys = list(session_keys) if session_keys is not None else [None] * len(specs)
    rows = [
        row_of(spec, settings, owner=owner, session_id=session_id, session_key=key)
        for spec, key in zip(specs, keys, strict=True)
    ]
    results, _ = await insert_rows(db, settings, rows)
    return results


async def insert_rows(
    db: raw.Driver, settings: Settings, rows: Sequence[dict[str, Any]]
) -> tuple[list[tuple[TaskOut, bool]], dict[uuid.UUID, Any]]:
    """Insert rows made by ``row_of`` in one statement: each task in order with whether it is new, and the
    new rows as stored, by id. A placed row that is new is leased to its agent; one that repeats a key is
    not (the task it repeats is returned)."""
    # default=str: ids read through asyncpg are its own UUID subclass, which orjson does not know.
    document = orjson.dumps(rows, default=str).decode()
    message = orjson.dumps({"k": "work", "r": settings.replica_id}).decode()
    records = await db.fetch(_INSERT_TASKS, document, BUS_CHANNEL, message, settings.replica_id)
    created = {record["id"]: record for record in records}
    if len(created) == len(rows):
        return [(out_of_row(created[row["id"]]), True) for row in rows], created
    return [await _existing_or_created(db, row, created) for row in rows], created


# One statement per idempotency space, each matching one partial unique index (app.db.models), so the
# lookup is an index probe whatever plan asyncpg's prepared statement settles on.
_EXISTING_IN_PROJECT = "SELECT * FROM tasks WHERE project = $1 AND idempotency_key = $2"
_EXISTING_OF_KEY = "SELECT * FROM tasks WHERE project IS NULL AND owner_key_id = $1 AND idempotency_key = $2"
_EXISTING_UNOWNED = (
    "SELECT * FROM tasks WHERE project IS NULL AND owner_key_id IS NULL AND idempotency_key = $1"
)
_EXISTING_BY_SESSION_KEY = "SELECT * FROM tasks WHERE session_id = $1 AND session_key = $2"


async def _existing_by_key(db: raw.Driver, row: Mapping[str, Any]) -> Any:
    key = row["idempotency_key"]
    if row["project"] is not None:
        return await db.fetchrow(_EXISTING_IN_PROJECT, row["project"], key)
    if row["owner_key_id"] is not None:
        return await db.fetchrow(_EXISTING_OF_KEY, row["owner_key_id"], key)
    return await db.fetchrow(_EXISTING_UNOWNED, key)


async def _existing_or_created(
    db: raw.Driver, row: dict[str, Any], created: Mapping[uuid.UUID, Any]
) -> tuple[TaskOut, bool]:
    if row["id"] in created:
        return out_of_row(created[row["id"]]), True
    if row["idempotency_key"] is not None:
        existing = await _existing_by_key(db, row)
    else:
        existing = await db.fetchrow(_EXISTING_BY_SESSION_KEY, row["session_id"], row["session_key"])
    if existing is None:  # the conflicting row vanished between the insert and this read
        raise TaskConflict("the task conflicted with another being written; retry the request")
    return out_of_row(existing), False


async def submit_batch(
    engine: AsyncEngine, settings: Settings, specs: Sequence[TaskCreate], *, owner: Owner
) -> list[TaskOut]:
    # A transaction: should a repeated key's task not be found, none of the batch is kept (all or nothing).
    async with raw.transaction(engine) as db:
        results = await insert_tasks(db, settings, specs, owner=owner)
    return [task for task, _ in results]


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
_COLUMNS = tuple((name, _RENAMED.get(name, name)) for name in TaskOut.model_fields if name != "usage")


def _out(field: Callable[[str], Any]) -> TaskOut:
    # model_construct: these values come from the database, typed by its schema; validating them again cost
    # a tenth of the server's CPU in a burst of batch submissions.
    values = {name: field(column) for name, column in _COLUMNS}
    values["usage"] = UsageOut.model_construct(**{name: field(name) for name in _USAGE})
    return TaskOut.model_construct(**values)
