"""Handles the frames of one registered agent. State changes go to the batcher; the rest is immediate.

A `result` that storage would refuse (app.storable) is answered with an `error` frame (`invalid_result`,
naming the field) and recorded as a non-retryable failure of its assignment, which is acknowledged like any
result: the agent stops resending it, and its other work carries on.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service as agents
from app.db.outage import report_failure
from app.dispatch.effects import Effects
from app.errors import WsErrorCode
from app.gateway.batcher import FrameBatcher
from app.gateway.connection import Connection
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
    invalid_result,
    result_problem,
)

logger = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database is unavailable; the socket is closed (1013) so the agent reconnects and resends."""


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
            if isinstance(frame, Result) and (problem := result_problem(frame)) is not None:
                frame = self._poison(frame, problem)
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

    def _poison(self, frame: Result, problem: str) -> Result:
        logger.info("result refused: %s", problem, extra={"agent_id": self.connection.agent_id})
        message = (
            f"result for assignment {frame.assignment_id} cannot be stored: {problem}; "
            "recorded as failed (invalid_result, not retried)"
        )
        self.connection.send(
            ErrorFrame(code=WsErrorCode.INVALID_RESULT, message=message[:2000], ref=str(frame.assignment_id))
        )
        return invalid_result(frame, problem)

    async def _drain(self) -> None:
        agent_id = self.connection.agent_id
        try:
            async with self.sessionmaker() as session:
                await agents.set_status(session, agent_id, "draining")
                await session.commit()
        except Exception as exc:
            if report_failure(logger, exc, "could not record a drain", agent_id=agent_id):
                raise DatabaseUnavailable(str(exc)) from exc
            self.connection.send(
                ErrorFrame(
                    code=WsErrorCode.INVALID_MESSAGE, message="the drain could not be recorded", ref="drain"
                )
            )
            return
        self.effects.fleet.agent_status(agent_id, "draining")
