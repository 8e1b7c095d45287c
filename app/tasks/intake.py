"""Single submits, coalesced: requests that arrive while a submit statement is in flight join the next one.

Most clients submit one task per request. Each used to cost a statement, a pooled connection (beyond the
pool's size, a new PostgreSQL backend per request) and a dispatcher wake-up of its own. Group commit, as
databases do it for their log: the first request runs at once; requests that arrive while its statement
runs wait for it to return and then go together in the next statement. At low rates nothing waits (a lone
request is written at once); under load, one statement and one connection serve many requests, and the
batch grows exactly as fast as the database falls behind.

Each row is independent (``ON CONFLICT DO NOTHING``, no transaction around the statement), so a request
is answered with its own task exactly as a lone submit would be. Should a coalesced statement fail, each of
its rows is retried alone, so one request's failure is never another's.

Placement: when an agent on this replica has room and nothing is waiting in the queue, the dispatcher
(a ``Placer``) chooses the agent before the statement runs, and the statement inserts the task already
leased (app.tasks.service). Submit, claim and lease become one statement, and the `assign` leaves as soon as
it returns: the common case of an idle fleet skips the queue, the NOTIFY and a dispatcher round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import raw
from app.tasks import submit
from app.tasks.schemas import TaskOut
from app.tasks.service import out_of_row

logger = logging.getLogger(__name__)

MAX_ROWS = 500  # per statement: bounds one statement's size and one round's latency

Pending = tuple[dict[str, Any], "asyncio.Future[tuple[TaskOut, bool]]"]


class Placer(Protocol):
    """Chooses agents for new tasks at submit time: the dispatcher, which owns routing and the local fleet."""

    async def place(self, rows: Sequence[dict[str, Any]]) -> None:
        """Set ``agent_id``, ``assignment_id`` and ``agent_model`` on the rows a local agent takes now,
        reserving their slots; leave the rest unplaced (they go to the queue)."""

    def release(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Give back the slots of placed rows that were not inserted."""

    def deliver(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Send `assign` for inserted rows that are leased (after the statement that leased them)."""


class Intake:
    def __init__(self, *, engine: AsyncEngine, settings: Settings, placer: Placer | None = None) -> None:
        self.engine = engine
        self.held = raw.HeldConnection(engine)  # one statement at a time: the group commit's writer
        self.settings = settings
        self.placer = placer
        self._waiting: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.statements = 0  # for tests and the performance log: rows / statements is the coalescing
        self.rows = 0

    async def submit(self, row: dict[str, Any]) -> tuple[TaskOut, bool]:
        """Write one task row (from ``submit.row_of``); the task as stored, and whether it is new."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[TaskOut, bool]] = loop.create_future()
        self._waiting.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all(), name="task-intake")
        # Shielded: a client that disconnects must not cancel a write other requests share; its own row is
        # still written (as a lone submit's would be, had the client left after sending it).
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_consume)  # nobody awaits it now: its error is not "never retrieved"
            raise

    async def stop(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            # Let the requests already accepted finish: the server stops taking new ones first.
            await asyncio.gather(writer, return_exceptions=True)
        await self.held.release()

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_ROWS], self._waiting[MAX_ROWS:]
            try:
                await self._write(batch)
            except Exception as exc:  # a bug here must fail these requests, never leave them waiting
                logger.exception("task intake failed")
                for _, future in batch:
                    _settle(future, exc)

    async def _write(self, batch: list[Pending], *, place: bool = True) -> None:
        rows = [row for row, _ in batch]
        placer = self.placer if place else None
        if placer is not None:
            await placer.place(rows)
        written: Mapping[Any, Any] | None = None  # the rows the statement wrote, once it has returned

        def deliver(records: Mapping[Any, Any]) -> None:
            # The `assign` leaves as soon as the statement returns, before the answers are built (at low rates
            # that work was a tenth of a millisecond on the dispatch path).
            nonlocal written
            written = records
            if placer is None:
                return
            try:
                repeated = [row for row in rows if row["agent_id"] is not None and row["id"] not in records]
                placer.release(repeated)  # a repeated idempotency key: no lease was written
                placer.deliver([record for record in records.values() if record["agent_id"] is not None])
            except Exception:  # the tasks are written: an unsent `assign` lapses and its task is retried
                logger.exception("could not send the assigns of placed tasks")

        try:
            async with self.held.connection() as db:
                results, _ = await submit.insert_rows(db, self.settings, rows, deliver)
        except Exception as exc:
            if written is not None:
                # The statement wrote its rows and their assigns left; what failed came after (reading back
                # a repeated key's task). The written ones are answered from the statement.
                await self._answer_written(batch, written, exc)
                return
            if placer is not None:
                placer.release([row for row in rows if row["agent_id"] is not None])
                for row in rows:
                    row.update(agent_id=None, assignment_id=None, agent_model=None)
            if len(batch) > 1:
                # Alone, each row is written (or, written already, found again) or fails on its own.
                for item in batch:
                    await self._write([item], place=False)
                return
            _settle(batch[0][1], exc)
            return
        self.statements += 1
        self.rows += len(batch)
        # The tasks are written: their requests are answered whatever happened to the assigns.
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)

    async def _answer_written(self, batch: list[Pending], written: Mapping[Any, Any], exc: Exception) -> None:
        self.statements += 1
        self.rows += len(batch)
        for item in batch:
            row, future = item
            if row["id"] in written:  # written by the statement (a retry would find its id taken)
                _settle(future, (out_of_row(written[row["id"]]), True))
                continue
            # A repeated key: nothing was leased for it (deliver gave its slot back).
            row.update(agent_id=None, assignment_id=None, agent_model=None)
            if len(batch) > 1:
                await self._write([item], place=False)
            else:
                _settle(future, exc)


def _consume(future: asyncio.Future[tuple[TaskOut, bool]]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future[tuple[TaskOut, bool]], outcome: tuple[TaskOut, bool] | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
