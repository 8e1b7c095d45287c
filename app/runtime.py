"""The long-lived services of one replica, started and stopped by the lifespan in a fixed order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import tracing
from app.agents import service as agents
from app.agents.queries import fleet_by_status
from app.collab.runner import SessionRunner
from app.collab.strategies import STRATEGIES
from app.config import Settings
from app.db import raw
from app.db.models import CollabSession, Replica, Task
from app.db.outage import report_failure
from app.dispatch.bus import Bus, asyncpg_dsn
from app.dispatch.dispatcher import Dispatcher
from app.dispatch.effects import Effects
from app.dispatch.fleet import Fleet
from app.dispatch.reaper import Reaper
from app.dispatch.resync import CapacityResync
from app.errors import CloseCode
from app.gateway.batcher import SHARDS
from app.gateway.endpoint import Gateway
from app.gateway.hub import Hub
from app.health.monitor import HealthMonitor
from app.interop.a2a_registry import A2AAgents
from app.metrics import Metrics
from app.replicas.identity import ReplicaIdentity
from app.replicas.reconcile import reconcile
from app.retention.service import Retention
from app.security import KeyCache
from app.signals import Signals
from app.tasks.intake import Intake
from app.tasks.states import OPEN

logger = logging.getLogger(__name__)

GOODBYE = "server shutting down; reconnect to another replica"
# Connections the hot-path writers hold for good (the intake, each frame batcher shard, the dispatcher), on
# top of the pool AGENTPLANE_DB_POOL_SIZE sizes for requests and background work.
HELD_CONNECTIONS = 1 + SHARDS + 1
# The row is created when missing: at start, or after the others declared this replica dead and deleted it.
_HEARTBEAT = """INSERT INTO replicas (id) VALUES ($1)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now() RETURNING xmax = 0 AS created"""


class Runtime:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        key_cache: KeyCache,
    ) -> None:
        assert settings.database_url is not None
        self.settings = settings
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.metrics = metrics
        tracing.setup()  # OTEL_* decides; off: every span site is one branch (app.tracing)
        self.hub = Hub()
        self.fleet = Fleet()
        self.signals = Signals()
        self.effects = Effects(metrics=metrics, signals=self.signals, fleet=self.fleet)
        self.gateway = Gateway(
            settings=settings,
            sessionmaker=sessionmaker,
            hub=self.hub,
            effects=self.effects,
            key_cache=key_cache,
        )
        self.bus = Bus(
            database_url=settings.database_url,
            replica_id=settings.replica_id,
            hub=self.hub,
            fleet=self.fleet,
            signals=self.signals,
            metrics=metrics,
            on_reconnect=self.reconcile,
        )
        self.dispatcher = Dispatcher(
            settings=settings, sessionmaker=sessionmaker, hub=self.hub, fleet=self.fleet, effects=self.effects
        )
        self.reaper = Reaper(settings=settings, sessionmaker=sessionmaker, effects=self.effects)
        self.health = HealthMonitor(
            settings=settings, sessionmaker=sessionmaker, hub=self.hub, effects=self.effects
        )
        self.sessions = SessionRunner(
            settings=settings, sessionmaker=sessionmaker, signals=self.signals, metrics=metrics
        )
        self.retention = Retention(settings=settings, engine=engine)
        # A2A agents this replica owns: connections in the hub like sockets, their frames through the batcher.
        self.a2a_agents = A2AAgents(
            settings=settings,
            sessionmaker=sessionmaker,
            hub=self.hub,
            effects=self.effects,
            batcher=self.gateway.batcher,
        )
        self.resync = CapacityResync(sessionmaker=sessionmaker, fleet=self.fleet)
        self.intake = Intake(engine=engine, settings=settings, placer=self.dispatcher)
        self.identity = ReplicaIdentity(asyncpg_dsn(settings.database_url), settings.replica_id)
        self._announced = False  # the first heartbeat has written this replica's row
        self._loops: list[asyncio.Task[None]] = []
        self._utilization_labels: set[tuple[str, str]] = set()

    @property
    def replica_id(self) -> str:
        return self.settings.replica_id

    async def start(self) -> None:
        await self.identity.acquire()  # before anything is recovered or announced: one process per id
        await self._recover_previous_incarnation()
        await self._heartbeat_once()
        await self.bus.start()
        for service in (
            self.gateway,
            self.dispatcher,
            self.reaper,
            self.health,
            self.sessions,
            self.retention,
            self.resync,
            self.a2a_agents,
        ):
            await service.start()
        self._loops = [
            asyncio.create_task(
                self._every(self.settings.replica_heartbeat_interval, self._heartbeat_once), name="heartbeat"
            ),
            asyncio.create_task(
                self._every(self.settings.metrics_refresh, self.refresh_gauges), name="gauges"
            ),
        ]
        await self.refresh_gauges()
        logger.info("replica started", extra={"replica_id": self.replica_id})

    async def goodbye(self, grace: float = 2.0) -> None:
        """A clean stop, before the HTTP server closes its connections (with 1012): every agent socket is
        closed with 4010, which the SDK reads as "connect to another replica"; their leases wait for them to
        claim them there (the hand-over grace)."""
        connections = list(self.hub)
        for connection in connections:
            connection.expect_back = True
            connection.close(CloseCode.SERVER_DRAINING, GOODBYE)
        await asyncio.gather(*(connection.drained(grace) for connection in connections))

    async def stop(self) -> None:
        for connection in self.hub:
            connection.expect_back = True
            connection.close(CloseCode.SERVER_DRAINING, GOODBYE)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await asyncio.gather(
            self.intake.stop(),
            self.resync.stop(),
            self.retention.stop(),
            self.sessions.stop(),
            self.health.stop(),
            self.reaper.stop(),
            self.dispatcher.stop(),
            self.bus.stop(),
            self.a2a_agents.stop(),
            return_exceptions=True,
        )
        await self.gateway.stop()  # last: frames still queued are unacknowledged, so agents resend them
        with contextlib.suppress(Exception):
            async with self.sessionmaker() as session:
                await session.execute(delete(Replica).where(Replica.id == self.replica_id))
                await session.commit()
        await self.identity.release()

    async def _recover_previous_incarnation(self) -> None:
        """A restart under the same replica id: what the dead process held goes back to the queue now."""
        async with self.sessionmaker() as session:
            outcome = await agents.mark_replica_agents_offline(
                session,
                self.replica_id,
                reason="replica restarted; its connections are gone",
                handover=self.settings.handover_grace > 0,
            )
            await session.commit()
        if outcome.finished:
            logger.warning("recovered %d leases of a previous run", len(outcome.finished))
        self.effects.after_commit(outcome, reason="replica_restarted")

    async def _heartbeat_once(self) -> None:
        if not await self.identity.ensure():
            # Another process took this id while the lock's connection was down: it owns these agents and
            # leases now, so this process must not serve them. A clean stop (SIGTERM, as an operator would).
            logger.error("replica id %r is held by another process; stopping", self.replica_id)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        async with raw.connection(self.engine) as db:
            created = await db.fetchval(_HEARTBEAT, self.replica_id)
        if created and self._announced:
            logger.warning(
                "this replica was declared dead by the others (paused past %gs?); its agents register again",
                self.settings.replica_timeout,
                extra={"replica_id": self.replica_id},
            )
        self._announced = True
        await self.reconcile()

    async def reconcile(self) -> None:
        """Make this replica's sockets agree with the database (app.replicas.reconcile)."""
        if self._announced:
            await reconcile(
                self.engine, hub=self.hub, fleet=self.fleet, signals=self.signals, replica_id=self.replica_id
            )

    async def refresh_gauges(self) -> None:
        """Fleet-wide gauges come from the database: right after a restart, and the same on every replica."""
        metrics = self.metrics
        async with self.sessionmaker() as session:
            queue = dict(
                (
                    await session.execute(
                        select(Task.status, func.count())
                        .where(Task.status.in_(list(OPEN)))
                        .group_by(Task.status)
                    )
                )
                .tuples()
                .all()
            )
            fleet = await fleet_by_status(session)
            sessions = (
                (
                    await session.execute(
                        select(CollabSession.strategy, func.count())
                        .where(CollabSession.status == "running")
                        .group_by(CollabSession.strategy)
                    )
                )
                .tuples()
                .all()
            )
        for open_status in OPEN:
            metrics.queue_depth.labels(open_status.value).set(queue.get(open_status.value, 0))
        metrics.show_agents(fleet)
        metrics.show_sessions(dict(sessions), STRATEGIES)
        shown = set()
        for agent_id, model, ratio in self.fleet.utilization():
            metrics.agent_utilization.labels(agent_id, model).set(ratio)
            shown.add((agent_id, model))
        for agent_id, model in self._utilization_labels - shown:
            metrics.forget_agent(agent_id, model)  # it left this replica: no stale series
        self._utilization_labels = shown

    @staticmethod
    async def _every(seconds: float, work: object) -> None:
        assert callable(work)
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception as exc:  # an outage is logged once (app.db.outage), not every round
                report_failure(logger, exc, "periodic job failed")
