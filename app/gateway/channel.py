"""Handles the frames of one registered agent. State changes go to the batcher; the rest is immediate."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service as agents
from app.errors import WsErrorCode
from app.gateway.batcher import FrameBatcher
from app.gateway.connection import Connection
from app.gateway.effects import Effects
from app.gateway.protocol import (
    Accept,
    Drain,
    ErrorFrame,
    Heartbeat,
    Pong,
    Progress,
    Register,
    Reject,
    Result,
)

logger = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """A frame could not be committed; the socket is closed so the agent reconnects and resends."""


class AgentChannel:
    def __init__(
        self,
        connection: Connection,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        batcher: FrameBatcher,
        effects: Effects,
    ) -> None:
        self.connection = connection
        self.sessionmaker = sessionmaker
        self.batcher = batcher
        self.effects = effects

    async def handle(self, frame: Any) -> None:
        if isinstance(frame, Pong):
            self.connection.pong(frame.nonce)
        elif isinstance(frame, Result | Reject):
            # The agent's slot is free the moment it answers: the dispatcher may fill it while the answer is
            # being committed (should the commit fail, the agent refuses an assign beyond its capacity, and
            # the fleet's periodic resync puts the count right).
            self.effects.fleet.assignment_released(self.connection.agent_id, frame.assignment_id)
            self.effects.signals.capacity_freed()
            await self.batcher.put(self.connection, frame)
        elif isinstance(frame, Accept | Progress):
            await self.batcher.put(self.connection, frame)
        elif isinstance(frame, Drain):
            await self._drain()
        elif isinstance(frame, Heartbeat):
            pass  # liveness is measured by pings; a heartbeat only keeps idle proxies from closing the socket
        elif isinstance(frame, Register):
            self.connection.send(
                ErrorFrame(
                    code=WsErrorCode.INVALID_MESSAGE,
                    message="already registered on this connection",
                    ref="register",
                )
            )

    async def _drain(self) -> None:
        agent_id = self.connection.agent_id
        try:
            async with self.sessionmaker() as session:
                await agents.set_status(session, agent_id, "draining")
                await session.commit()
        except Exception as exc:
            logger.exception("could not record a drain", extra={"agent_id": agent_id})
            raise DatabaseUnavailable(str(exc)) from exc
        self.effects.fleet.agent_status(agent_id, "draining")
