"""Handles the frames of one registered agent.

Each frame is one short transaction; replies and wake-ups follow its commit."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service as agents
from app.config import Settings
from app.errors import WsErrorCode
from app.gateway.connection import Connection
from app.gateway.effects import Effects
from app.gateway.protocol import (
    Accept,
    Ack,
    Drain,
    ErrorFrame,
    Heartbeat,
    Pong,
    Progress,
    Register,
    Reject,
    Result,
)
from app.routing.scoring import Price
from app.tasks import lifecycle

logger = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """A frame could not be committed; the socket is closed so the agent reconnects and resends."""


class AgentChannel:
    def __init__(
        self,
        connection: Connection,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        effects: Effects,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.effects = effects
        self.prices = {
            model: Price(price["input_per_1k"], price["output_per_1k"])
            for model, price in settings.model_prices.items()
        }
        self.retry = lifecycle.RetryPolicy(settings.retry_backoff, settings.retry_backoff_max)

    @property
    def agent_id(self) -> str:
        return self.connection.agent_id

    async def _transaction(
        self, work: Callable[[AsyncSession], Awaitable[lifecycle.Outcome]]
    ) -> lifecycle.Outcome:
        try:
            async with self.sessionmaker() as session:
                outcome = await work(session)
                await session.commit()
                return outcome
        except Exception as exc:
            logger.exception("could not record a frame", extra={"agent_id": self.agent_id})
            raise DatabaseUnavailable(str(exc)) from exc

    def _error(self, code: WsErrorCode, message: str, ref: str | None = None) -> None:
        self.connection.send(ErrorFrame(code=code.value, message=message, ref=ref))

    async def handle(self, frame: Any) -> None:
        if isinstance(frame, Pong):
            self.connection.pong(frame.nonce)
        elif isinstance(frame, Result):
            await self._result(frame)
        elif isinstance(frame, Accept):
            await self._simple(
                str(frame.assignment_id), lambda s: lifecycle.accept(s, self.agent_id, frame.assignment_id)
            )
        elif isinstance(frame, Progress):
            await self._simple(
                str(frame.assignment_id),
                lambda s: lifecycle.progress(
                    s, self.agent_id, frame.assignment_id, frame.progress, frame.message
                ),
            )
        elif isinstance(frame, Reject):
            outcome = await self._simple(
                str(frame.assignment_id),
                lambda s: lifecycle.reject(
                    s, self.agent_id, frame.assignment_id, frame.reason, delay=self.settings.retry_backoff / 4
                ),
            )
            self.effects.after_commit(outcome, reason="rejected")
        elif isinstance(frame, Drain):
            await self._drain()
        elif isinstance(frame, Heartbeat):
            pass  # liveness is measured by pings; a heartbeat only keeps idle proxies from closing the socket
        elif isinstance(frame, Register):
            self._error(WsErrorCode.INVALID_MESSAGE, "already registered on this connection", "register")

    async def _simple(
        self, ref: str, work: Callable[[AsyncSession], Awaitable[lifecycle.Outcome]]
    ) -> lifecycle.Outcome:
        outcome = await self._transaction(work)
        if outcome.error:
            self._error(WsErrorCode.UNKNOWN_ASSIGNMENT, outcome.error, ref)
        return outcome

    async def _result(self, frame: Result) -> None:
        outcome = await self._transaction(
            lambda s: lifecycle.record_result(
                s,
                self.agent_id,
                self.connection.model,
                frame,
                prices=self.prices,
                cost_limit_per_task=self.settings.cost_limit_per_task,
                retry=self.retry,
            )
        )
        if outcome.error:
            self._error(WsErrorCode.UNKNOWN_ASSIGNMENT, outcome.error, str(frame.assignment_id))
            return
        if outcome.ack:
            self.connection.send(Ack(assignment_id=frame.assignment_id))
        self.effects.after_commit(outcome, model=self.connection.model, reason="retryable_failure")

    async def _drain(self) -> None:
        async def work(session: AsyncSession) -> lifecycle.Outcome:
            await agents.set_status(session, self.agent_id, "draining")
            return lifecycle.Outcome()

        await self._transaction(work)
        self.effects.fleet.agent_status(self.agent_id, "draining")
