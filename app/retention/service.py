"""The retention sweep on a schedule, run by one replica at a time.

Every replica runs this service; each interval, one of them takes a PostgreSQL advisory lock with a
try-lock and sweeps, and the others, finding it taken, skip that round (no waiting, no double work). The
lock is a session-level lock on the connection that runs the deletes, so it is released when the sweep ends
or, should the replica die, when its connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from app.background import BackgroundService
from app.config import Settings
from app.db import raw
from app.db.outage import OUTAGES, is_outage
from app.retention import purge
from app.retention.purge import Swept

logger = logging.getLogger(__name__)

# The advisory lock's key: any constant no other code uses ("APRETAIN" in ASCII).
LOCK_KEY = 0x4150_5245_5441_494E


@asynccontextmanager
async def exclusive(engine: AsyncEngine) -> AsyncIterator[raw.Driver | None]:
    """A pooled connection holding the retention lock, or None when another replica holds it."""
    async with engine.connect() as pooled:
        db: raw.Driver = (await pooled.get_raw_connection()).driver_connection
        if not await db.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            yield None
            return
        try:
            yield db
        finally:
            try:
                await db.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
            except BaseException:
                # A connection back in the pool still holding the lock would keep every other replica
                # out for as long as it lives; closed, it holds nothing.
                await pooled.invalidate()
                raise


class Retention(BackgroundService):
    name = "retention"

    def __init__(self, *, settings: Settings, engine: AsyncEngine) -> None:
        super().__init__()
        self.settings = settings
        self.engine = engine

    @property
    def enabled(self) -> bool:
        s = self.settings
        return bool(s.retention_tasks or s.retention_sessions or s.retention_agents)

    async def run(self) -> None:
        if not self.enabled:
            return  # every setting is 0: keep everything
        while True:
            await asyncio.sleep(self.settings.retention_interval)
            try:
                swept = await self.sweep_once()
                OUTAGES.succeeded()
            except Exception as exc:
                if is_outage(exc):
                    OUTAGES.failed(exc)
                else:
                    logger.exception("retention sweep failed")
                continue
            if swept is not None and swept.total:
                logger.info(
                    "retention deleted %d tasks, %d sessions (%d subtasks), %d agents",
                    swept.tasks,
                    swept.sessions,
                    swept.session_tasks,
                    swept.agents,
                )

    async def sweep_once(self) -> Swept | None:
        """One sweep; None when another replica holds the lock (it is sweeping, so this one skips)."""
        s = self.settings
        batch = s.retention_batch
        async with exclusive(self.engine) as db:
            if db is None:
                return None
            swept = Swept()
            # Sessions before tasks: the subtasks of expired sessions go with them, by the session's clock.
            if s.retention_sessions:
                swept.sessions, swept.session_tasks = await purge.sessions(
                    db, older_than=s.retention_sessions, batch=batch
                )
            if s.retention_tasks:
                swept.tasks = await purge.tasks(db, older_than=s.retention_tasks, batch=batch)
            if s.retention_agents:
                swept.agents = await purge.agents(db, offline_for=s.retention_agents, batch=batch)
            return swept
