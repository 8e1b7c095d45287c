"""Registrations, coalesced: agents that register while a registration is being written join the next write.

After a deploy or a restart the whole fleet reconnects at once. One registration used to be a session of its
own: BEGIN, a read, an upsert, COMMIT (a WAL flush), four round trips and a transaction per agent, which at
10,000 agents was most of the server's CPU for half a minute. As with single submits (app.tasks.intake), the
first registration runs at once; those that arrive meanwhile are written together, in one transaction of two
set-based statements (a read of the ids, and the agents with their capability index), however many there are.

Only plain registrations are coalesced: an agent that says it holds leases, or whose id still holds open work,
has leases to hand over or requeue (app.tasks.recovery), and registers alone through ``service.register``, as
before. A coalesced write that fails is retried one registration at a time the same way, so one agent's bad
row (or a deadlock) is never another's refusal.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service
from app.agents.service import RegisteredAgent
from app.config import Settings
from app.db import raw
from app.db.session import engine_of
from app.errors import AgentRejected, CloseCode
from app.gateway.protocol import Register
from app.tasks import lifecycle
from app.tasks.service import BUS_CHANNEL
from app.tasks.work import Quarantine

logger = logging.getLogger(__name__)

MAX_BATCH = 250  # registrations per transaction: bounds a statement's size and the locks it holds

_EXISTING = """SELECT id, replica_id, status, owner_key_id, transport,
    EXISTS (SELECT 1 FROM assignments WHERE agent_id = agents.id AND status IN ('assigned', 'running'))
        AS holds_work
FROM agents WHERE id = ANY($1::text[])"""
_NOTIFY = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS p(payload)"


@dataclass(slots=True)
class _Pending:
    frame: Register
    agent_id: str
    key_id: uuid.UUID | None
    admin: bool
    future: asyncio.Future[RegisteredAgent]
    undelivered: tuple[uuid.UUID, ...] = ()


class Registrar:
    def __init__(self, *, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.engine = engine_of(sessionmaker)
        self._waiting: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._alone_tasks: set[asyncio.Task[None]] = set()  # registrations with leases, off the writer
        self.batches = 0  # for tests and the performance log: registrations / batches is the coalescing
        self.coalesced = 0

    async def register(
        self,
        frame: Register,
        *,
        key_id: uuid.UUID | None,
        admin: bool,
        undelivered: Collection[uuid.UUID] = (),
    ) -> RegisteredAgent:
        """The agent of this socket, registered (``service.register`` has the rules)."""
        allowed = self.settings.allowed_models
        if allowed and frame.model not in allowed:
            raise AgentRejected(
                CloseCode.MODEL_NOT_ALLOWED,
                f"model {frame.model!r} is not allowed here; allowed: {', '.join(allowed)}",
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RegisteredAgent] = loop.create_future()
        item = _Pending(
            frame, frame.agent_id or service.new_agent_id(), key_id, admin, future, tuple(undelivered)
        )
        if frame.holding or undelivered:  # leases to hand over or requeue: alone, as before
            return await self._alone(item)
        self._waiting.append(item)
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all(), name="agent-registrations")
        # Shielded: a socket that closes meanwhile must not cancel a write other registrations share.
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_consume)
            raise

    async def stop(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.gather(writer, return_exceptions=True)
        await asyncio.gather(*self._alone_tasks, return_exceptions=True)

    async def _alone(self, item: _Pending) -> RegisteredAgent:
        """One registration in a session of its own (``service.register``: hand-over and requeue included)."""
        frame = item.frame
        if frame.agent_id is None:  # the id chosen for it
            frame = frame.model_copy(update={"agent_id": item.agent_id})
        async with self.sessionmaker() as session:
            registered = await service.register(
                session,
                frame,
                replica_id=self.settings.replica_id,
                allowed_models=self.settings.allowed_models,
                default_concurrency=self.settings.max_concurrent_tasks,
                key_id=item.key_id,
                admin=item.admin,
                undelivered=item.undelivered,
                quarantine=Quarantine.of(self.settings),
            )
            await session.commit()
            return registered

    async def _write_all(self) -> None:
        while self._waiting:
            batch, later = _unique(self._waiting[:MAX_BATCH])
            self._waiting = later + self._waiting[MAX_BATCH:]
            try:
                alone = await self._write(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0].future, exc)
                    continue
                logger.info(
                    "a coalesced registration failed; registering its %d agents one by one", len(batch)
                )
                alone = [item for item in batch if not item.future.done()]
            for item in alone:  # each its own transaction, as they used to run, not holding up the next batch
                task = asyncio.get_running_loop().create_task(self._register_alone(item))
                self._alone_tasks.add(task)
                task.add_done_callback(self._alone_tasks.discard)

    async def _register_alone(self, item: _Pending) -> None:
        try:
            registered = await self._alone(item)
        except Exception as exc:
            _fail(item.future, exc)
        else:
            if not item.future.done():
                item.future.set_result(registered)

    async def _write(self, batch: list[_Pending]) -> list[_Pending]:
        """Write the plain registrations of ``batch`` in one transaction; return those that must register
        alone (their id holds open work)."""
        replica_id = self.settings.replica_id
        alone: list[_Pending] = []
        plain: list[_Pending] = []
        replaced: list[str] = []
        async with raw.transaction(self.engine) as db:
            existing = {
                row["id"]: row for row in await db.fetch(_EXISTING, [item.agent_id for item in batch])
            }
            for item in batch:
                row = existing.get(item.agent_id)
                if row is None:
                    plain.append(item)
                elif row["owner_key_id"] not in (None, item.key_id) and not item.admin:
                    _fail(
                        item.future,
                        AgentRejected(
                            CloseCode.UNAUTHORIZED,
                            f"agent id {item.agent_id!r} is registered to another API key",
                        ),
                    )
                elif row["transport"] != "websocket":
                    _fail(
                        item.future,
                        AgentRejected(
                            CloseCode.UNAUTHORIZED,
                            f"agent id {item.agent_id!r} is an agent reached over {row['transport']}",
                        ),
                    )
                elif row["holds_work"]:
                    alone.append(item)
                else:
                    plain.append(item)
                    if row["status"] != "offline" and row["replica_id"] != replica_id:
                        replaced.append(item.agent_id)
            if not plain:
                return alone
            records = await service.upsert_agents(
                db,
                [(item.agent_id, item.frame, item.key_id) for item in plain],
                replica_id=replica_id,
                transport="websocket",
                default_concurrency=self.settings.max_concurrent_tasks,
            )
            if replaced:
                payloads = [
                    orjson.dumps({"k": "replace", "agent": agent_id, "replica": replica_id}).decode()
                    for agent_id in replaced
                ]
                await db.execute(_NOTIFY, BUS_CHANNEL, payloads)
        self.batches += 1
        self.coalesced += len(plain)
        for item in plain:
            if not item.future.done():
                item.future.set_result(_registered(item, records[item.agent_id]))
        return alone


def _unique(items: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
    """One registration per agent id in a statement; a repeated id waits for the next one (in order)."""
    seen: set[str] = set()
    first: list[_Pending] = []
    later: list[_Pending] = []
    for item in items:
        (later if item.agent_id in seen else first).append(item)
        seen.add(item.agent_id)
    return first, later


def _registered(item: _Pending, record: Any) -> RegisteredAgent:
    frame = item.frame
    done = record["tasks_completed"] + record["tasks_failed"]
    return RegisteredAgent(
        id=item.agent_id,
        name=record["name"],
        model=record["model"],
        capabilities=frozenset(cap.name for cap in frame.capabilities),
        max_concurrency=record["max_concurrency"],
        success_rate=record["tasks_completed"] / done if done else 1.0,
        active=0,
        requeued=lifecycle.Outcome(),
        version=record["version"],
        status=record["status"],
        task_types=None if frame.task_types is None else frozenset(frame.task_types),
        versions={cap.name: cap.version for cap in frame.capabilities},
    )


def _consume(future: asyncio.Future[RegisteredAgent]) -> None:
    if not future.cancelled():
        future.exception()


def _fail(future: asyncio.Future[RegisteredAgent], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
