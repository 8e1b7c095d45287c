"""Pings every local agent each interval; three failures in a row take it out of routing."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service as agents
from app.background import BackgroundService
from app.config import Settings
from app.gateway.connection import Connection
from app.gateway.effects import Effects
from app.gateway.hub import Hub
from app.gateway.protocol import Ping
from app.tasks import recovery

logger = logging.getLogger(__name__)

Check = tuple[str, bool, float | None, str | None]


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
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_all()
            except Exception:
                logger.exception("health round failed")

    async def check_all(self) -> None:
        timeout = min(self.settings.health_check_timeout, self.settings.health_check_interval * 0.9)
        connections = [c for c in self.hub if not c.closed]
        if not connections:
            return
        checks = await asyncio.gather(*(self._check(c, timeout) for c in connections))
        self._rounds += 1
        async with self.sessionmaker() as session:
            unhealthy, recovered = await agents.record_health(session, checks, prune=self._rounds % 10 == 1)
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
        if unhealthy:
            async with self.sessionmaker() as session:
                outcome = await recovery.requeue_open_assignments(
                    session, agent_ids=unhealthy, reason="agent unhealthy"
                )
                await session.commit()
            self.effects.after_commit(outcome, reason="agent_unhealthy")

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
