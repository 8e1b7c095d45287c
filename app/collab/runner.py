"""The session runner: a lifespan service that moves every running session forward, one step at a time.

Everything it knows comes from the database, so a restarted server (or another replica) picks up every
running session where the last committed step left it. Each session is locked with FOR UPDATE SKIP LOCKED
for its step, so replicas share the work without stepping the same session twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.background import BackgroundService
from app.collab import engine
from app.config import Settings
from app.db.models import CollabSession
from app.metrics import Metrics
from app.signals import Signals
from app.tasks.lifecycle import db_now

logger = logging.getLogger(__name__)

# Seconds between rounds when nothing woke the runner: subtasks that ended on another replica, deadlines.
POLL = 1.0
# Tasks can end thousands of times a second, each waking the runner; rounds closer than this are merged.
MIN_ROUND_INTERVAL = 0.02
BATCH = 500


class SessionRunner(BackgroundService):
    name = "session-runner"

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        signals: Signals,
        metrics: Metrics,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.signals = signals
        self.metrics = metrics

    async def run(self) -> None:
        wake = self.signals.sessions
        while True:
            # Cleared before the round, so a task that ends during the round wakes the next one.
            wake.clear()
            try:
                await self.run_once()
            except Exception:
                logger.exception("session runner round failed")
            await asyncio.sleep(MIN_ROUND_INTERVAL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), POLL)

    async def run_once(self) -> int:
        """Step every running session once; returns how many changed."""
        changed = 0
        after: uuid.UUID | None = None
        while True:
            async with self.sessionmaker() as session:
                query = select(CollabSession.id).where(CollabSession.status == engine.RUNNING)
                if after is not None:
                    query = query.where(CollabSession.id > after)
                ids = list(await session.scalars(query.order_by(CollabSession.id).limit(BATCH)))
            for session_id in ids:
                try:
                    changed += await self.step(session_id)
                except Exception:
                    # One broken session must not hold up the others; it is tried again next round.
                    logger.exception("session step failed", extra={"session_id": str(session_id)})
            if len(ids) < BATCH:
                return changed
            after = ids[-1]

    async def step(self, session_id: uuid.UUID) -> bool:
        async with self.sessionmaker() as session:
            row = await session.scalar(
                select(CollabSession)
                .where(CollabSession.id == session_id, CollabSession.status == engine.RUNNING)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return False  # finished meanwhile, or another replica is stepping it right now
            advanced = await engine.advance(session, self.settings, row, now=await db_now(session))
            if not advanced.changed:
                await session.rollback()
                return False
            await session.commit()
        advanced.after_commit(self.signals, self.metrics)
        if advanced.finished_status is not None:
            logger.info(
                "session finished",
                extra={"session_id": str(session_id), "status": advanced.finished_status},
            )
        return True
