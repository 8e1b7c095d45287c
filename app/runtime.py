"""The long-lived services of one replica, started and stopped by the lifespan in a fixed order."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.models import Replica
from app.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    engine: AsyncEngine
    metrics: Metrics
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def replica_id(self) -> str:
        return self.settings.replica_id

    async def start(self) -> None:
        await self._heartbeat_once()
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="replica-heartbeat"))
        logger.info("replica started", extra={"replica_id": self.replica_id})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        async with self.sessionmaker() as session:
            await session.execute(delete(Replica).where(Replica.id == self.replica_id))
            await session.commit()

    async def _heartbeat_once(self) -> None:
        async with self.sessionmaker() as session:
            stmt = insert(Replica).values(id=self.replica_id)
            stmt = stmt.on_conflict_do_update(index_elements=[Replica.id], set_={"heartbeat_at": func.now()})
            await session.execute(stmt)
            await session.commit()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_heartbeat_interval)
            try:
                await self._heartbeat_once()
            except Exception:
                logger.exception("replica heartbeat failed")
