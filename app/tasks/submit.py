"""Submitting tasks: a task row from a request, and the one statement that writes rows (leased ones included).

Single submits reach `insert_rows` through the intake (app.tasks.intake: group commit, placement); batches
and session subtasks through `insert_tasks`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import orjson
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import raw
from app.db.models import Task
from app.errors import InvalidInput, TaskConflict
from app.ownership import Owner
from app.tasks.schemas import TaskCreate, TaskOut
from app.tasks.service import BUS_CHANNEL, out_of_row

_FRAME_OVERHEAD = 4096  # room for the assign frame's other fields around the payload

_INSERTED = (
    "id", "type", "required_capabilities", "payload", "priority", "max_attempts", "timeout", "queue_timeout",
    "model", "strategy", "max_cost", "estimated_tokens", "agent_ids", "idempotency_key", "session_id",
    "session_key", "owner_key_id", "project", "min_versions", "fallback_models", "traceparent",
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
    traceparent: str | None = None,
) -> dict[str, Any]:
    """``traceparent``: the span the server's spans for this task continue (app.tracing), version 00."""
    encoded = orjson.dumps(spec.payload)
    size = len(encoded)
    limit = settings.max_message_bytes - _FRAME_OVERHEAD
    if size > limit:
        raise InvalidInput(
            f"payload is {size} bytes; a task payload may be at most {limit} bytes "
            f"(AGENT_MAX_MESSAGE_BYTES less the frame's envelope)",
            errors=[{"field": "payload", "message": f"at most {limit} bytes", "type": "too_large"}],
        )
    row = {
        "id": uuid.uuid4(),
        "type": spec.type,
        "required_capabilities": spec.capabilities,
        # Encoded once: the statement's document embeds these bytes as they are (insert_rows).
        "payload": orjson.Fragment(encoded),
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
        "min_versions": spec.min_versions,
        "fallback_models": spec.fallback_models,
        "agent_id": None,  # placement: set by app.tasks.intake when a local agent takes it at once
        "assignment_id": None,
        "agent_model": None,
    }
    if traceparent is not None:  # absent from the document is NULL: no cost for untraced tasks
        row["traceparent"] = traceparent
    return row


async def insert_tasks(
    db: raw.Driver,
    settings: Settings,
    specs: Sequence[TaskCreate],
    *,
    owner: Owner,
    session_id: uuid.UUID | None = None,
    session_keys: Sequence[str] | None = None,
    traceparents: Sequence[str | None] | None = None,
) -> list[tuple[TaskOut, bool]]:
    """Insert on the caller's connection (in its transaction, if any); each task in order, and whether new.
    ``owner`` comes from the principal the request was authenticated as: recording it costs no query.
    ``traceparents``: each task's stored trace context (app.tracing), or None for none."""
    keys = list(session_keys) if session_keys is not None else [None] * len(specs)
    parents = list(traceparents) if traceparents is not None else [None] * len(specs)
    rows = [
        row_of(spec, settings, owner=owner, session_id=session_id, session_key=key, traceparent=parent)
        for spec, key, parent in zip(specs, keys, parents, strict=True)
    ]
    results, _ = await insert_rows(db, settings, rows)
    return results


async def insert_rows(
    db: raw.Driver,
    settings: Settings,
    rows: Sequence[dict[str, Any]],
    inserted: Callable[[Mapping[uuid.UUID, Any]], None] | None = None,
) -> tuple[list[tuple[TaskOut, bool]], dict[uuid.UUID, Any]]:
    """Insert rows made by ``row_of`` in one statement: each task in order with whether it is new, and the
    new rows as stored, by id. A placed row that is new is leased to its agent; one that repeats a key is
    not (the task it repeats is returned). ``inserted`` sees the new rows as soon as the statement returns,
    before the answers are built (the intake sends the leased ones' `assign` there)."""
    # default=str: ids read through asyncpg are its own UUID subclass, which orjson does not know.
    document = orjson.dumps(rows, default=str).decode()
    message = orjson.dumps({"k": "work", "r": settings.replica_id}).decode()
    records = await db.fetch(_INSERT_TASKS, document, BUS_CHANNEL, message, settings.replica_id)
    created = {record["id"]: record for record in records}
    if inserted is not None:
        inserted(created)
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
    engine: AsyncEngine,
    settings: Settings,
    specs: Sequence[TaskCreate],
    *,
    owner: Owner,
    traceparents: Sequence[str | None] | None = None,
) -> list[tuple[TaskOut, bool]]:
    """Each task as stored, and whether it is new (False: a repeated idempotency key)."""
    # A transaction: should a repeated key's task not be found, none of the batch is kept (all or nothing).
    async with raw.transaction(engine) as db:
        return await insert_tasks(db, settings, specs, owner=owner, traceparents=traceparents)
