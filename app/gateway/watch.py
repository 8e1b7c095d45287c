"""A periodic look at this replica's sockets, never work on the per-frame path.

- Revoked keys: every connection remembers the key it authenticated with. Each interval, one query asks which
  of the keys in use here are still live; sockets whose key was revoked (or deleted) are closed with 4001.
  With the interval under the key cache's lifetime (5 s), a revoked key stops working within that window.
- Stalled writers: a socket whose writer has waited on one frame for STALLED_AFTER seconds has a peer that
  stopped reading (its queue may never fill: the kernel's buffers absorb a few megabytes), and is closed with
  1013, its unsent assigns going back to the queue uncharged. This check has its own timer (every
  STALLED_CHECK seconds, no database), so a revoked-key query that hangs during an outage cannot delay it:
  a peer that stops reading is closed within STALLED_AFTER + STALLED_CHECK seconds (4 s). A round that
  starts late (the event loop itself was held up, so no writer could run either) judges no one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.background import BackgroundService
from app.db.outage import report_failure
from app.errors import CloseCode
from app.gateway.hub import Hub

logger = logging.getLogger(__name__)

# Seconds one frame may wait for the peer to read. A healthy agent reads a frame of 1 MiB (the largest) in
# far less even over a slow link (3 s is 350 KB/s): its socket drains while it works.
STALLED_AFTER = 3.0
STALLED_CHECK = 1.0
_LIVE_KEYS = text("SELECT id FROM api_keys WHERE id = ANY(:ids) AND revoked_at IS NULL")


class SocketWatch(BackgroundService):
    name = "socket-watch"

    def __init__(self, *, sessionmaker: async_sessionmaker[AsyncSession], hub: Hub, interval: float) -> None:
        super().__init__()
        self.sessionmaker = sessionmaker
        self.hub = hub
        self.interval = interval

    async def run(self) -> None:
        stalled = asyncio.create_task(self._watch_stalled(), name="stalled-writers")
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.check_once()
                except Exception as exc:
                    report_failure(logger, exc, "revoked-key check failed")
        finally:
            stalled.cancel()

    async def _watch_stalled(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + STALLED_CHECK
            await asyncio.sleep(STALLED_CHECK)
            if loop.time() - due < STALLED_CHECK / 2:  # on time: the writers had the loop too
                self.close_stalled()

    def close_stalled(self) -> int:
        now, closed = time.monotonic(), 0
        for connection in self.hub:
            if not connection.closed and connection.stalled_for(now) > STALLED_AFTER:
                logger.warning("agent not reading; closing", extra={"agent_id": connection.agent_id})
                connection.close(CloseCode.TRY_AGAIN_LATER, "the agent is not reading")
                closed += 1
        return closed

    async def check_once(self) -> int:
        """Close the sockets whose key is no longer live; returns how many."""
        in_use = {c.key_id for c in self.hub if c.key_id is not None and not c.closed}
        if not in_use:
            return 0
        async with self.sessionmaker() as session:
            rows = await session.execute(_LIVE_KEYS, {"ids": list(in_use)})
            live: set[uuid.UUID] = {row[0] for row in rows}
        closed = 0
        for connection in self.hub:
            if connection.key_id in in_use and connection.key_id not in live:
                logger.info("closing a socket whose key was revoked", extra={"agent_id": connection.agent_id})
                connection.close(CloseCode.UNAUTHORIZED, "the API key was revoked")
                closed += 1
        return closed
