"""Agents' state-changing frames, committed in batches: one transaction for many frames.

Frames are sharded by agent, so each agent's frames are applied in the order it sent them, while many
agents share each commit. A result is acknowledged only after the commit that records it. A batch that
fails is retried frame by frame, so one bad frame cannot hold back the others; a frame that still cannot be
committed closes its agent's socket (1011): the agent reconnects and resends its unacknowledged results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import raw
from app.db.session import engine_of
from app.errors import WsErrorCode
from app.gateway.connection import Connection
from app.gateway.effects import Effects
from app.gateway.protocol import Accept, Ack, ErrorFrame, Progress, Reject, Result
from app.routing.policy import price_table
from app.routing.scoring import Price
from app.tasks import lifecycle
from app.tasks.work import Outcome, Work

logger = logging.getLogger(__name__)

MAX_BATCH = 512
QUEUE_SIZE = 20_000
SHARDS = 2

Frame = Accept | Progress | Reject | Result


@dataclass(frozen=True, slots=True)
class Item:
    connection: Connection
    frame: Frame
    received_at: datetime


class FrameBatcher:
    def __init__(
        self, *, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], effects: Effects
    ) -> None:
        self.settings = settings
        self.engine = engine_of(sessionmaker)
        self.effects = effects
        self.prices: Mapping[str, Price] = price_table(settings)
        self.retry = lifecycle.RetryPolicy(settings.retry_backoff, settings.retry_backoff_max)
        self.queues: list[asyncio.Queue[Item]] = [asyncio.Queue(QUEUE_SIZE // SHARDS) for _ in range(SHARDS)]
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._run(queue), name=f"frame-batcher-{index}")
            for index, queue in enumerate(self.queues)
        ]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def put(self, connection: Connection, frame: Frame) -> None:
        """Queue a frame; waits only when the queue is full, which slows the agents down (backpressure)."""
        shard = zlib.crc32(connection.agent_id.encode()) % SHARDS
        await self.queues[shard].put(Item(connection, frame, datetime.now(UTC)))

    async def _run(self, queue: asyncio.Queue[Item]) -> None:
        while True:
            items = [await queue.get()]
            while len(items) < MAX_BATCH and not queue.empty():
                items.append(queue.get_nowait())
            try:
                await self._commit(items)
            except Exception:
                logger.exception("frame batch failed")

    async def _commit(self, items: list[Item]) -> None:
        try:
            async with raw.transaction(self.engine) as db:
                work = await Work.begin_raw(db)
                await work.lock(item.frame.assignment_id for item in items)
                outcomes = [self._apply(work, item) for item in items]
                await work.flush()
        except Exception:
            if len(items) > 1:
                for item in items:
                    await self._commit([item])
                return
            logger.exception("could not record a frame", extra={"agent_id": items[0].connection.agent_id})
            items[0].connection.close(1011, "could not record the frame; reconnect and resend")
            return
        for item, outcome in zip(items, outcomes, strict=True):
            self._after(item, outcome)

    def _apply(self, work: Work, item: Item) -> Outcome:
        agent_id, frame = item.connection.agent_id, item.frame
        if isinstance(frame, Result):
            return lifecycle.record_result(
                work,
                agent_id,
                item.connection.model,
                frame,
                prices=self.prices,
                cost_limit_per_task=self.settings.cost_limit_per_task,
                retry=self.retry,
                at=item.received_at,
            )
        if isinstance(frame, Accept):
            return lifecycle.accept(work, agent_id, frame.assignment_id, at=item.received_at)
        if isinstance(frame, Progress):
            return lifecycle.progress(work, agent_id, frame.assignment_id, frame.progress, frame.message)
        return lifecycle.reject(
            work, agent_id, frame.assignment_id, frame.reason, delay=self.settings.retry_backoff / 4
        )

    def _after(self, item: Item, outcome: Outcome) -> None:
        connection, frame = item.connection, item.frame
        if outcome.error:
            connection.send(
                ErrorFrame(
                    code=WsErrorCode.UNKNOWN_ASSIGNMENT, message=outcome.error, ref=str(frame.assignment_id)
                )
            )
            return
        if outcome.ack:
            connection.send(Ack(assignment_id=frame.assignment_id))
        reason: Any = {"result": "retryable_failure", "reject": "rejected"}.get(frame.type, frame.type)
        self.effects.after_commit(outcome, model=connection.model, reason=reason)
