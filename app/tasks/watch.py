"""Waiting on tasks without holding a database connection: long-polls and the SSE event stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import Task
from app.security import Principal
from app.signals import Signals
from app.tasks import service
from app.tasks.states import TERMINAL

POLL = 0.5  # seconds between looks when no local signal arrives (changes made on other replicas)


async def wait_until_terminal(
    maker: async_sessionmaker[AsyncSession],
    signals: Signals,
    task_id: uuid.UUID,
    wait: float,
    *,
    viewer: Principal,
) -> Task:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        async with maker() as session:
            task = await service.get_task(session, task_id, viewer=viewer)
        remaining = deadline - loop.time()
        if task.status in TERMINAL or remaining <= 0:
            return task
        await signals.wait_task(task_id, min(POLL, remaining))


async def ensure_task_exists(
    maker: async_sessionmaker[AsyncSession], task_id: uuid.UUID, *, viewer: Principal
) -> None:
    async with maker() as session:
        await service.get_task(session, task_id, viewer=viewer)


async def event_stream(
    maker: async_sessionmaker[AsyncSession], signals: Signals, task_id: uuid.UUID, after_id: int
) -> AsyncIterator[dict[str, Any]]:
    """Every transition and progress message after ``after_id``; ends after the terminal transition."""
    while True:
        async with maker() as session:
            events = await service.events_after(session, task_id, after_id)
        for event in events:
            after_id = event.id
            data = {
                "task_id": str(event.task_id),
                "kind": event.kind,
                "from": event.from_status,
                "to": event.to_status,
                "reason": event.reason,
                "data": event.data,
                "at": event.at.isoformat(),
            }
            yield {"id": str(event.id), "event": event.kind, "data": orjson.dumps(data).decode()}
            if event.kind == "transition" and event.to_status in TERMINAL:
                return
        if not events:
            await signals.wait_task(task_id, POLL)
