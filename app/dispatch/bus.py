"""LISTEN/NOTIFY between replicas: new work, cancels, drains, deregistrations, replaced sockets.

Notifications are sent inside the transaction that justifies them, so they arrive only after its commit.
A dedicated connection listens; if it drops, it reconnects and the dispatcher looks for work at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from app.db.outage import OUTAGES, is_outage, report_failure
from app.dispatch.fleet import Fleet
from app.errors import CloseCode
from app.gateway.hub import Hub
from app.gateway.protocol import Cancel, DrainRequest
from app.metrics import Metrics
from app.signals import Signals
from app.tasks.service import BUS_CHANNEL

logger = logging.getLogger(__name__)


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Bus:
    def __init__(
        self,
        *,
        database_url: str,
        replica_id: str,
        hub: Hub,
        fleet: Fleet,
        signals: Signals,
        metrics: Metrics,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.replica_id = replica_id
        self.hub = hub
        self.fleet = fleet
        self.signals = signals
        self.metrics = metrics
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.on_reconnect = on_reconnect  # what was sent while the listener was away is re-derived
        self._connects = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_listening(), name="bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)

    async def _keep_listening(self) -> None:
        while True:
            try:
                lost = asyncio.Event()
                self._conn = await asyncpg.connect(self.dsn)
                self._conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await self._conn.add_listener(BUS_CHANNEL, self._on_notification)
                self.connected.set()
                self.signals.work_available()  # anything sent while we were away is picked up now
                self._connects += 1
                if self._connects > 1 and self.on_reconnect is not None:
                    try:
                        await self.on_reconnect()
                    except Exception as exc:  # the next heartbeat reconciles again
                        report_failure(logger, exc, "could not reconcile after the listener reconnected")
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage is logged once (app.db.outage), not every second
                if is_outage(exc):
                    OUTAGES.failed(exc)
                else:
                    logger.warning("bus connection lost; reconnecting", exc_info=True)
            self.connected.clear()
            await asyncio.sleep(1.0)

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self.handle(orjson.loads(payload))
        except Exception:
            logger.exception("bad bus message")

    def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("k")
        if kind == "work":
            # A replica signals its own dispatcher directly; the echo of its own NOTIFY would be a second,
            # empty claim per submission.
            if message.get("r") != self.replica_id:
                self.signals.work_available()
            return
        if kind == "done":
            for task_id in message.get("t", ()):
                self.signals.task_changed(uuid.UUID(task_id))
            return
        agent_id = str(message.get("agent", ""))
        if kind == "cancel":
            assignment_id = uuid.UUID(message["assignment"])
            if self.hub.send(agent_id, Cancel(assignment_id=assignment_id, reason=message.get("reason", ""))):
                self.fleet.assignment_ended(agent_id, assignment_id)
                self.signals.capacity_freed()
        elif kind == "drain":
            self.fleet.agent_status(agent_id, "draining")
            self.hub.send(agent_id, DrainRequest(reason="drained by an operator"))
        elif kind == "quarantine":
            self.fleet.agent_status(agent_id, "quarantined")
        elif kind == "release":
            self.fleet.agent_status(agent_id, "active")
            self.signals.work_available()  # tasks only it can take may be waiting
        elif kind == "deregister":
            self.hub.close(agent_id, CloseCode.DEREGISTERED, "deregistered by an operator")
            self.metrics.forget_agent(agent_id, str(message.get("model", "")))
        elif kind == "replace" and message.get("replica") != self.replica_id:
            self.hub.close(agent_id, CloseCode.REPLACED, "the agent connected to another replica")
