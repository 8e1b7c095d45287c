"""Pings every local agent each interval, and each new one as it registers; three failures in a row take it
out of routing. Also ends the quarantines of local agents whose cool-down has passed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service as agents
from app.background import BackgroundService
from app.config import Settings
from app.db.outage import report_failure
from app.dispatch.effects import Effects
from app.gateway.connection import Connection
from app.gateway.hub import Hub
from app.gateway.protocol import Ping
from app.tasks import recovery
from app.tasks.work import Quarantine

logger = logging.getLogger(__name__)

Check = tuple[str, bool, float | None, str | None]

SPREAD_SHARE = 0.3  # pings go out over the first 30 % of the interval...
MAX_SPREAD = 5.0  # ...but over at most 5 s
SLICE_GAP = 0.05  # seconds between slices
SLICE_MIN = 100  # agents per slice at least: a small fleet is pinged at once


class HealthMonitor(BackgroundService):
    name = "health-monitor"

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        hub: Hub,
        effects: Effects,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.hub = hub
        self.effects = effects
        self._rounds = 0

    async def run(self) -> None:
        interval = self.settings.health_check_interval
        signals = self.effects.signals
        loop = asyncio.get_running_loop()
        next_round = loop.time() + interval
        while True:
            # A fixed cadence: a slow round (many agents, timeouts) must not stretch the interval. Agents that
            # join meanwhile are checked at once (the seed checks an agent as it registers), in one batch
            # however many joined while the last check ran.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signals.joined.wait(), max(0.0, next_round - loop.time()))
            try:
                if loop.time() >= next_round:
                    next_round = max(next_round + interval, loop.time())
                    signals.take_newcomers()  # the round checks them too
                    await self.check_all()
                    await self.end_quarantines()
                else:
                    await self.check_newcomers()
            except Exception as exc:  # an outage is logged once, not every round
                report_failure(logger, exc, "health round failed")

    async def check_newcomers(self) -> None:
        newcomers = self.effects.signals.take_newcomers()
        connections = [c for agent_id in sorted(newcomers) if (c := self.hub.get(agent_id)) is not None]
        await self._run_checks([c for c in connections if not c.closed], full_round=False)

    async def check_all(self) -> None:
        await self._run_checks([c for c in self.hub if not c.closed], full_round=True)

    async def end_quarantines(self) -> None:
        """This replica's agents whose quarantine cool-down has passed are offered work again."""
        async with self.sessionmaker() as session:
            released = await agents.end_quarantines(session, self.settings.replica_id)
            await session.commit()
        for agent_id in released:
            logger.info("agent quarantine over: offered work again", extra={"agent_id": agent_id})
            self.effects.fleet.agent_status(agent_id, "active")
        if released:
            self.effects.signals.work_available()

    async def _run_checks(self, connections: list[Connection], *, full_round: bool) -> None:
        if not connections:
            return
        timeout = min(self.settings.health_check_timeout, self.settings.health_check_interval * 0.9)
        checks = await asyncio.gather(*await self._spread(connections, timeout))
        if full_round:
            self._rounds += 1
        async with self.sessionmaker() as session:
            prune = full_round and self._rounds % 10 == 1
            unhealthy, recovered = await agents.record_health(session, checks, prune=prune)
            await session.commit()
        models = {c.agent_id: c.model for c in connections}
        for agent_id, ok, _, _ in checks:
            if not ok:
                self.effects.metrics.health_check_failures.labels(models[agent_id]).inc()
        for agent_id in unhealthy:
            logger.warning("agent unhealthy: 3 health checks failed", extra={"agent_id": agent_id})
            self.effects.fleet.agent_status(agent_id, "unhealthy")
        for agent_id in recovered:
            logger.info("agent healthy again", extra={"agent_id": agent_id})
            self.effects.fleet.agent_status(agent_id, "active")
        if recovered:
            self.effects.signals.work_available()  # tasks only they can take may be waiting
        if unhealthy:
            async with self.sessionmaker() as session:
                outcome = await recovery.requeue_open_assignments(
                    session,
                    agent_ids=unhealthy,
                    reason="agent unhealthy",
                    quarantine=Quarantine.of(self.settings),
                )
                await session.commit()
            self.effects.after_commit(outcome, reason="agent_unhealthy")

    async def _spread(self, connections: list[Connection], wait: float) -> list[asyncio.Task[Check]]:
        """Start the pings in slices over a share of the interval: ten thousand pings sent in one burst would
        queue behind each other and make healthy agents look late."""
        spread = min(self.settings.health_check_interval * SPREAD_SHARE, MAX_SPREAD)
        slices = max(1, min(len(connections) // SLICE_MIN, int(spread / SLICE_GAP)))
        size = -(-len(connections) // slices)
        started: list[asyncio.Task[Check]] = []
        try:
            for first in range(0, len(connections), size):
                if started:
                    await asyncio.sleep(SLICE_GAP)
                started += [
                    asyncio.create_task(self._check(c, wait)) for c in connections[first : first + size]
                ]
        except asyncio.CancelledError:
            for task in started:
                task.cancel()
            raise
        return started

    async def _check(self, connection: Connection, wait: float) -> Check:
        nonce = secrets.token_hex(8)
        pong = connection.expect_pong(nonce)
        started = time.perf_counter()
        if not connection.send(Ping(nonce=nonce)):
            connection.forget_ping(nonce)
            return connection.agent_id, False, None, "socket closed"
        try:
            await asyncio.wait_for(pong, wait)
        except (TimeoutError, asyncio.CancelledError):
            connection.forget_ping(nonce)
            return connection.agent_id, False, None, f"no pong within {wait:g}s"
        return connection.agent_id, True, (time.perf_counter() - started) * 1000, None
