"""Lapsed leases, tasks that waited too long, and replicas that stopped heartbeating."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service as agents
from app.background import BackgroundService
from app.config import Settings
from app.db.models import Agent, Replica
from app.db.outage import report_failure
from app.dispatch.effects import Effects
from app.tasks import recovery
from app.tasks.work import Quarantine

logger = logging.getLogger(__name__)


class Reaper(BackgroundService):
    name = "reaper"

    def __init__(
        self, *, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], effects: Effects
    ) -> None:
        super().__init__()
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.effects = effects

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = 0.0
        while True:
            await asyncio.sleep(self.settings.reaper_interval)
            try:
                await self.reap_once()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self.settings.replica_heartbeat_interval
                    await self.sweep_dead_replicas()
            except Exception as exc:  # an outage is logged once, not every round
                report_failure(logger, exc, "reaper round failed")

    async def reap_once(self) -> None:
        while True:
            async with self.sessionmaker() as session:
                outcome = await recovery.reap(session, quarantine=Quarantine.of(self.settings))
                await session.commit()
            self.effects.after_commit(outcome, reason="lease_lapsed")
            if len(outcome.finished) < recovery.BATCH:
                break
        if self.settings.handover_grace > 0:
            await self.requeue_abandoned()

    async def requeue_abandoned(self) -> None:
        """Leases of agents that dropped and did not come back within the hand-over grace period."""
        while True:
            async with self.sessionmaker() as session:
                outcome = await recovery.requeue_abandoned(
                    session, grace=self.settings.handover_grace, quarantine=Quarantine.of(self.settings)
                )
                await session.commit()
            self.effects.after_commit(outcome, reason="agent_lost")
            if len(outcome.finished) < recovery.BATCH:
                return

    async def sweep_dead_replicas(self) -> None:
        """Replicas silent past the timeout, or gone without a trace, lose their agents and leases."""
        me = self.settings.replica_id
        async with self.sessionmaker() as session:
            lapsed = select(Replica.id).where(
                Replica.id != me,
                Replica.heartbeat_at < func.now() - timedelta(seconds=self.settings.replica_timeout),
            )
            orphaned = (
                select(Agent.replica_id)
                .where(Agent.status != "offline", Agent.replica_id.is_not(None), Agent.replica_id != me)
                .where(~select(Replica.id).where(Replica.id == Agent.replica_id).exists())
            )
            dead = set(await session.scalars(lapsed)) | {r for r in await session.scalars(orphaned) if r}
        for replica_id in sorted(dead):
            async with self.sessionmaker() as session:
                outcome = await agents.mark_replica_agents_offline(
                    session,
                    replica_id,
                    reason=f"replica {replica_id} stopped heartbeating",
                    handover=self.settings.handover_grace > 0,
                )
                await session.execute(delete(Replica).where(Replica.id == replica_id))
                await session.commit()
            logger.warning("replica declared dead", extra={"replica_id": replica_id})
            self.effects.after_commit(outcome, reason="replica_lost")
