"""Agents' state-changing frames, committed in batches: one transaction for many frames.

Frames are sharded by agent, so each agent's frames are applied in the order it sent them, while many
agents share each commit. A result is acknowledged only after the commit that records it. A batch that
fails is retried frame by frame, so one bad frame cannot hold back the others. A frame that still cannot be
committed costs only itself: it gets an `error` frame, and a result is recorded as a failure of its
assignment (`invalid_result`) and acknowledged, so the agent does not resend it forever. Only a database
outage closes sockets, with 1013 (try again later): the agents reconnect and resend their unacknowledged
results once the database is back.
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
from app.db.outage import OUTAGES, is_outage
from app.db.session import engine_of
from app.dispatch.effects import Effects
from app.errors import CloseCode, WsErrorCode
from app.gateway.connection import Connection
from app.gateway.protocol import Accept, Ack, ErrorFrame, Progress, Reject, Result, invalid_result
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
            except Exception:  # a bug: the batch's frames go unacknowledged and their agents resend them
                logger.exception("frame batch failed")

    async def _commit(self, items: list[Item]) -> None:
        try:
            outcomes = await self._write(items)
        except Exception as exc:
            if is_outage(exc):
                OUTAGES.failed(exc)
                for connection in {id(item.connection): item.connection for item in items}.values():
                    connection.close(
                        CloseCode.TRY_AGAIN_LATER, "the database is unavailable; try again later"
                    )
            elif len(items) > 1:
                for item in items:
                    await self._commit([item])
            else:
                await self._isolate(items[0], exc)
            return
        OUTAGES.succeeded()
        for item, outcome in zip(items, outcomes, strict=True):
            self._after(item, outcome)

    async def _write(self, items: list[Item]) -> list[Outcome]:
        async with raw.transaction(self.engine) as db:
            work = await Work.begin_raw(db)
            await work.lock(item.frame.assignment_id for item in items)
            outcomes = [self._apply(work, item) for item in items]
            await work.flush()
        return outcomes

    async def _isolate(self, item: Item, exc: Exception) -> None:
        """A frame the database refuses while it is up (what the edge checks missed, or counters that would
        overflow): the frame is refused on its own; a result fails its assignment instead (no usage)."""
        connection, frame = item.connection, item.frame
        cause = f"{type(exc).__name__}: {str(exc)[:200]}"
        logger.warning(
            "could not record a %s frame: %s", frame.type, cause, extra={"agent_id": connection.agent_id}
        )
        ref = str(frame.assignment_id)
        if not isinstance(frame, Result):
            message = f"the {frame.type} frame could not be recorded ({type(exc).__name__})"
            connection.send(ErrorFrame(code=WsErrorCode.INVALID_MESSAGE, message=message, ref=ref))
            return
        failure = invalid_result(frame, f"the database refused it ({type(exc).__name__})", keep_usage=False)
        message = f"result for assignment {ref} could not be recorded ({type(exc).__name__})"
        try:
            outcomes = await self._write([Item(connection, failure, item.received_at)])
        except Exception as again:
            if is_outage(again):
                OUTAGES.failed(again)
                connection.close(CloseCode.TRY_AGAIN_LATER, "the database is unavailable; try again later")
                return
            logger.exception("could not record a result as failed", extra={"agent_id": connection.agent_id})
            connection.send(ErrorFrame(code=WsErrorCode.INVALID_RESULT, message=message, ref=ref))
            return
        connection.send(
            ErrorFrame(
                code=WsErrorCode.INVALID_RESULT,
                message=f"{message}; recorded as failed (invalid_result)",
                ref=ref,
            )
        )
        self._after(Item(connection, failure, item.received_at), outcomes[0])

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
