"""Watching sessions without holding a database connection: the long-poll and the SSE event stream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.collab import engine, service
from app.collab.schemas import SessionOut
from app.security import Principal

# Seconds between looks: sessions are stepped by whichever replica's runner gets there first, so there is
# no local signal to wait on.
POLL = 0.5


async def wait_for_end(
    maker: async_sessionmaker[AsyncSession], session_id: uuid.UUID, wait: float, *, viewer: Principal
) -> SessionOut:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        async with maker() as session:
            row = await service.get_session(
                session, session_id, viewer=viewer
            )  # the row alone: subtasks only at the end
            remaining = deadline - loop.time()
            if row.status != engine.RUNNING or remaining <= 0:
                return await service.session_view(session, session_id)
        await asyncio.sleep(min(POLL, remaining))


async def ensure_exists(
    maker: async_sessionmaker[AsyncSession], session_id: uuid.UUID, *, viewer: Principal
) -> None:
    async with maker() as session:
        await service.get_session(session, session_id, viewer=viewer)


async def event_stream(
    maker: async_sessionmaker[AsyncSession], session_id: uuid.UUID, after_id: int
) -> AsyncIterator[dict[str, Any]]:
    """Every event of the session after ``after_id``; ends after the outcome."""
    while True:
        async with maker() as session:
            events = await service.events_after(session, session_id, after_id)
        for event in events:
            after_id = event.id
            data = {
                "session_id": str(session_id),
                "kind": event.kind,
                "data": event.data,
                "at": event.at.isoformat(),
            }
            yield {"id": str(event.id), "event": event.kind, "data": orjson.dumps(data).decode()}
            if event.kind == engine.FINISHED_EVENT:
                return
        if not events:
            await asyncio.sleep(POLL)
