"""The fleet's capacity count, put right from the database on its own schedule.

The dispatcher counts each local agent's open assignments in memory (app.dispatch.fleet): a slot is taken
when a lease is written and freed when the agent answers. Should a count drift (an answer whose commit
failed, a lease requeued by another replica's reaper), it would stay wrong; so every ``RESYNC_INTERVAL``
the open assignments of the agents this replica holds are read back and replace the counts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.background import BackgroundService
from app.db.models import Assignment
from app.db.outage import report_failure
from app.dispatch.fleet import Fleet

logger = logging.getLogger(__name__)

RESYNC_INTERVAL = 10.0  # seconds


class CapacityResync(BackgroundService):
    name = "capacity-resync"

    def __init__(self, *, sessionmaker: async_sessionmaker[AsyncSession], fleet: Fleet) -> None:
        super().__init__()
        self.sessionmaker = sessionmaker
        self.fleet = fleet

    async def run(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_INTERVAL)
            try:
                await self.resync_once()
            except Exception as exc:  # an outage is logged once, not every round
                report_failure(logger, exc, "capacity resync failed")

    async def resync_once(self) -> None:
        agent_ids = list(self.fleet.agents)
        if not agent_ids:
            return
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(Assignment.agent_id, Assignment.id).where(
                    Assignment.agent_id.in_(agent_ids), Assignment.status.in_(["assigned", "running"])
                )
            )
        open_by_agent: dict[str, set[uuid.UUID]] = {}
        for agent_id, assignment_id in rows.tuples():
            open_by_agent.setdefault(agent_id, set()).add(assignment_id)
        self.fleet.resync(open_by_agent)
