"""Agents' state-changing frames, committed in batches: one transaction for many frames.

Frames are sharded by agent, so each agent's frames are applied in the order it sent them, while many
agents share each commit. A result is acknowledged only after the commit that records it. A batch that
fails is retried frame by frame, so one bad frame cannot hold back the others. What happens to a frame that
still fails depends on why (app.db.outage):

- the data cannot be stored (SQLSTATE classes 22, 23, 54, an encoding error): the frame is poison and costs
  only itself. A result is tried once more without its usage (the status and output kept), then recorded as
  a failure of its assignment (`invalid_result`) and acknowledged, so the agent does not resend it forever;
  a reject is recorded without its reason; an accept or progress gets an `error` frame;
- the database is unavailable (an outage): the batch's sockets are closed with 1013 (try again later), and
  the agents reconnect and resend their unacknowledged results once the database is back;
- anything else (a statement timeout, a deadlock or serialization failure, a read-only database after a
  failover, a full disk) is the database's condition of the moment, never the frame's fault: the frame is
  tried again a few times over about a second, and if it still fails, a result or reject closes its socket
  with 1013 unacknowledged (the agent resends the result; a reject's task goes back to the queue uncharged),
  while an accept or progress, both advisory, is dropped. Such a frame is never recorded as `invalid_result`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import raw
from app.db.outage import OUTAGES, is_data_error, is_outage
from app.db.session import engine_of
from app.dispatch.effects import Effects
from app.errors import CloseCode, WsErrorCode
from app.gateway.connection import Connection
from app.gateway.protocol import (
    Accept,
    Ack,
    ErrorFrame,
    Progress,
    Reject,
    Result,
    Usage,
    invalid_result,
)
from app.routing.policy import price_table
from app.routing.scoring import Price
from app.tasks import lifecycle
from app.tasks.work import Outcome, Work

logger = logging.getLogger(__name__)

MAX_BATCH = 512
QUEUE_SIZE = 20_000
SHARDS = 2
RETRY_DELAYS = (0.05, 0.2, 0.8)  # seconds before each new try of a frame that failed for a transient reason
OUTAGE_CLOSE = "the database is unavailable; try again later"

Frame = Accept | Progress | Reject | Result


@dataclass(frozen=True, slots=True)
class Item:
    connection: Connection
    frame: Frame
    received_at: datetime
    tries: int = 0  # earlier tries that failed for a transient reason


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
        # A shard's worker writes one batch at a time (retries and isolation too), on a connection of its own.
        self.held = [raw.HeldConnection(self.engine) for _ in range(SHARDS)]
        self._workers: list[asyncio.Task[None]] = []
        self._retrying: set[asyncio.Task[None]] = set()

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
        for task in list(self._retrying):
            task.cancel()
        for held in self.held:
            await held.release()

    async def put(self, connection: Connection, frame: Frame) -> None:
        """Queue a frame; waits only when the queue is full, which slows the agents down (backpressure)."""
        await self._queue_of(connection).put(Item(connection, frame, datetime.now(UTC)))

    def _queue_of(self, connection: Connection) -> asyncio.Queue[Item]:
        return self.queues[_shard_of(connection)]

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
                self._close_for_outage(items, exc)
            elif len(items) > 1:
                for item in items:
                    await self._commit([item])
            elif is_data_error(exc):
                await self._isolate(items[0], exc)
            else:
                self._transient(items[0], exc)
            return
        OUTAGES.succeeded()
        for item, outcome in zip(items, outcomes, strict=True):
            self._after(item, outcome)

    def _close_for_outage(self, items: list[Item], exc: Exception) -> None:
        OUTAGES.failed(exc)
        for connection in {id(item.connection): item.connection for item in items}.values():
            connection.close(CloseCode.TRY_AGAIN_LATER, OUTAGE_CLOSE)

    async def _write(self, items: list[Item]) -> list[Outcome]:
        async with self.held[_shard_of(items[0].connection)].transaction() as db:
            work = await Work.begin_raw(db)
            await work.lock(item.frame.assignment_id for item in items)
            outcomes = [self._apply(work, item) for item in items]
            await work.flush()
        return outcomes

    async def _write_one(self, item: Item) -> Outcome | Exception:
        """One frame in a transaction of its own: its outcome, or why it failed."""
        try:
            (outcome,) = await self._write([item])
        except Exception as exc:
            return exc
        OUTAGES.succeeded()
        return outcome

    def _transient(self, item: Item, exc: Exception) -> None:
        """A frame that failed for the database's condition of the moment (not its own content, not an
        outage): tried again later; after the last try a result or reject closes its socket with 1013."""
        connection, frame = item.connection, item.frame
        if is_outage(exc):
            self._close_for_outage([item], exc)
            return
        if item.tries < len(RETRY_DELAYS) and not connection.closed:
            again = replace(item, tries=item.tries + 1)
            task = asyncio.get_running_loop().create_task(self._requeue(again, RETRY_DELAYS[item.tries]))
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)
            return
        logger.warning(
            "could not record a %s frame (%d tries): %s: %s",
            frame.type,
            item.tries + 1,
            type(exc).__name__,
            str(exc)[:200],
            extra={"agent_id": connection.agent_id},
        )
        if isinstance(frame, Reject):
            # The reject stands even unrecorded: the disconnect gives the task back without charging it.
            connection.undelivered.append(frame.assignment_id)
        if isinstance(frame, Result | Reject):
            connection.close(CloseCode.TRY_AGAIN_LATER, "a frame could not be recorded; try again later")
        # An accept or a progress is advisory: dropped (a result may come without an accept).

    async def _requeue(self, item: Item, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._queue_of(item.connection).put(item)

    async def _isolate(self, item: Item, exc: Exception) -> None:
        """A frame whose data the database refuses while it is up (what the edge checks missed): the frame is
        refused on its own. A result is first tried without its usage, keeping its status and output; if the
        database still refuses it, a failure (`invalid_result`, no usage) is recorded in its place."""
        connection, frame = item.connection, item.frame
        cause = f"{type(exc).__name__}: {str(exc)[:200]}"
        logger.warning(
            "could not record a %s frame: %s", frame.type, cause, extra={"agent_id": connection.agent_id}
        )
        ref = str(frame.assignment_id)
        if isinstance(frame, Accept | Progress):
            message = f"the {frame.type} frame could not be stored: {_refusal(exc)}"
            connection.send(ErrorFrame(code=WsErrorCode.INVALID_MESSAGE, message=message, ref=ref))
            return
        if isinstance(frame, Reject):
            await self._fallback(item, replace(item, frame=Reject(assignment_id=frame.assignment_id)))
            return
        if frame.usage != Usage():
            stripped = replace(item, frame=frame.model_copy(update={"usage": Usage()}))
            outcome = await self._write_one(stripped)
            if isinstance(outcome, Outcome):
                logger.warning("recorded a result without its usage", extra={"agent_id": connection.agent_id})
                self._after(stripped, outcome)
                return
            if not is_data_error(outcome):
                self._transient(item, outcome)
                return
        problem = f"the database refused it: {_refusal(exc)}"
        failure = replace(item, frame=invalid_result(frame, problem, keep_usage=False))
        if await self._fallback(item, failure):
            message = f"result for assignment {ref} could not be stored ({problem}); recorded as failed"
            connection.send(ErrorFrame(code=WsErrorCode.INVALID_RESULT, message=message[:2000], ref=ref))

    async def _fallback(self, item: Item, fallback: Item) -> bool:
        """Record ``fallback`` in place of ``item``'s frame. When that fails too, the frame is never answered
        as recorded: a transient failure is tried again (from the original frame), anything else closes the
        socket with 1013 so the agent resends; False then."""
        outcome = await self._write_one(fallback)
        if isinstance(outcome, Outcome):
            self._after(fallback, outcome)
            return True
        if is_data_error(outcome):
            logger.error(
                "could not record a %s frame's fallback",
                item.frame.type,
                exc_info=outcome,
                extra={"agent_id": item.connection.agent_id},
            )
            self._transient(replace(item, tries=len(RETRY_DELAYS)), outcome)
        else:
            self._transient(item, outcome)
        return False

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


def _refusal(exc: Exception) -> str:
    """What the database said, naming the column when it does (SQLSTATE and message)."""
    sqlstate = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    column = getattr(exc, "column_name", None)
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    where = f" (column {column})" if column else ""
    return f"{first}{where} [{sqlstate}]" if sqlstate else f"{first}{where}"


def _shard_of(connection: Connection) -> int:
    """An agent's frames go to one shard, in order."""
    return zlib.crc32(connection.agent_id.encode()) % SHARDS
