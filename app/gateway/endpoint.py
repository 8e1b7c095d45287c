"""`/ws/agents`: handshake auth, the register deadline, one reader loop per socket, cleanup on close."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service as agents
from app.config import Settings
from app.errors import AgentRejected, CloseCode, WsErrorCode
from app.gateway.batcher import FrameBatcher
from app.gateway.channel import AgentChannel, DatabaseUnavailable
from app.gateway.connection import Connection
from app.gateway.effects import Effects
from app.gateway.hub import Hub
from app.gateway.protocol import AGENT_FRAME, AGENT_FRAME_TYPES, ErrorFrame, Register, Registered
from app.security import KeyCache, Principal, Scope, authenticate, bearer_token
from app.tasks.work import Outcome

logger = logging.getLogger(__name__)
router = APIRouter()

MAX_BAD_FRAMES = 20


@router.websocket("/ws/agents")
async def agents_socket(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.runtime.gateway
    await gateway.serve(websocket)


class BadFrame(Exception):
    def __init__(self, code: WsErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.frame = ErrorFrame(code=code.value, message=message, ref=ref)


def parse_frame(text: str, max_bytes: int) -> Any:
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode()) > max_bytes):
        raise BadFrame(WsErrorCode.TOO_LARGE, f"frame exceeds {max_bytes} bytes")
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadFrame(WsErrorCode.INVALID_MESSAGE, "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise BadFrame(WsErrorCode.INVALID_MESSAGE, "frame must be a JSON object with a `type`")
    kind = raw.get("type")
    if kind not in AGENT_FRAME_TYPES:
        raise BadFrame(WsErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind!r}", str(kind))
    try:
        return AGENT_FRAME.validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or kind}: {err['msg']}" for err in exc.errors()
        )
        ref = raw.get("assignment_id") if isinstance(raw.get("assignment_id"), str) else kind
        raise BadFrame(WsErrorCode.INVALID_MESSAGE, problems, ref) from None


async def _receive_text(websocket: WebSocket) -> str | None:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("text") is not None:
        return str(message["text"])
    return bytes(message.get("bytes") or b"").decode("utf-8", errors="replace")


class Gateway:
    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        hub: Hub,
        effects: Effects,
        key_cache: KeyCache,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.hub = hub
        self.effects = effects
        self.key_cache = key_cache
        self.batcher = FrameBatcher(settings=settings, sessionmaker=sessionmaker, effects=effects)

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def serve(self, websocket: WebSocket) -> None:
        token = bearer_token(websocket.headers.get("authorization")) or websocket.query_params.get("token")
        admin_key = self.settings.admin_key.get_secret_value() if self.settings.admin_key else None
        async with self.sessionmaker() as session:
            principal = await authenticate(session, token or "", admin_key=admin_key, cache=self.key_cache)
        await websocket.accept()
        if principal is None or not principal.has_any(Scope.AGENT):
            reason = "invalid API key" if principal is None else "the key lacks the agent scope"
            await websocket.close(CloseCode.UNAUTHORIZED, reason)
            return
        metrics = self.effects.metrics
        metrics.ws_connections.inc()
        try:
            await self._session(websocket, principal)
        finally:
            metrics.ws_connections.dec()

    async def _await_register(self, websocket: WebSocket) -> Register | None:
        bad = 0
        while True:
            text = await _receive_text(websocket)
            if text is None:
                return None
            try:
                frame = parse_frame(text, self.settings.max_message_bytes)
            except BadFrame as exc:
                error = exc.frame
            else:
                if isinstance(frame, Register):
                    return frame
                error = ErrorFrame(
                    code=WsErrorCode.INVALID_MESSAGE, message="send `register` first", ref=frame.type
                )
            bad += 1
            await websocket.send_text(error.dump().decode())
            if bad >= MAX_BAD_FRAMES:
                await websocket.close(CloseCode.PROTOCOL_VIOLATION, "too many bad frames")
                return None

    async def _session(self, websocket: WebSocket, principal: Principal) -> None:
        try:
            register = await asyncio.wait_for(self._await_register(websocket), self.settings.register_timeout)
        except TimeoutError:
            await websocket.close(CloseCode.PROTOCOL_VIOLATION, "no register frame in time")
            return
        if register is None:
            return
        replica_id = self.settings.replica_id
        try:
            async with self.sessionmaker() as session:
                registered = await agents.register(
                    session,
                    register,
                    replica_id=replica_id,
                    allowed_models=self.settings.allowed_models,
                    default_concurrency=self.settings.max_concurrent_tasks,
                    key_id=principal.key_id,
                    admin=Scope.ADMIN in principal.scopes,
                )
                await session.commit()
        except AgentRejected as exc:
            logger.info("agent refused: %s", exc.reason, extra={"model": register.model})
            await websocket.close(exc.close_code, exc.reason[:120])
            return
        connection = Connection(
            websocket, agent_id=registered.id, model=registered.model, version=registered.version
        )
        previous = self.hub.attach(connection)
        if previous is not None:
            previous.close(CloseCode.REPLACED, "replaced by a newer connection with the same agent_id")
        effects = self.effects
        effects.after_commit(registered.requeued, reason="agent_reconnected")
        effects.metrics.agents_registered.labels(registered.model).inc()
        logger.info(
            "agent registered",
            extra={"agent_id": registered.id, "model": registered.model, "replica_id": replica_id},
        )
        connection.send(
            Registered(
                agent_id=registered.id,
                heartbeat_interval=self.settings.health_check_interval,
                replica_id=replica_id,
            )
        )
        effects.fleet.agent_joined(registered)
        effects.signals.work_available()  # tasks only this agent can take may be waiting
        channel = AgentChannel(
            connection, sessionmaker=self.sessionmaker, batcher=self.batcher, effects=self.effects
        )
        try:
            await self._read_loop(websocket, connection, channel)
        finally:
            await self._cleanup(connection)

    async def _read_loop(self, websocket: WebSocket, connection: Connection, channel: AgentChannel) -> None:
        bad = 0
        while not connection.closed:
            text = await _receive_text(websocket)
            if text is None:
                return
            try:
                frame = parse_frame(text, self.settings.max_message_bytes)
            except BadFrame as exc:
                bad += 1
                connection.send(exc.frame)
                if bad >= MAX_BAD_FRAMES:
                    connection.close(CloseCode.PROTOCOL_VIOLATION, "too many bad frames")
                continue
            bad = 0
            try:
                await channel.handle(frame)
            except DatabaseUnavailable:
                connection.close(1011, "could not record the frame; reconnect and resend")

    async def _disconnect(self, connection: Connection) -> Outcome:
        async with self.sessionmaker() as session:
            outcome = await agents.disconnect(
                session, connection.agent_id, replica_id=self.settings.replica_id, version=connection.version
            )
            await session.commit()
            return outcome

    async def _cleanup(self, connection: Connection) -> None:
        connection.close(1000, "bye")
        await connection.drained(5)
        if not self.hub.detach(connection):
            return  # replaced by a newer connection, which owns the agent now
        self.effects.fleet.agent_left(connection.agent_id)
        try:
            # Shielded with its own session and commit, so a cancelled handler (shutdown) still records it.
            outcome = await asyncio.shield(self._disconnect(connection))
        except Exception:
            # The reaper recovers the leases when they lapse; nothing is lost, only delayed.
            logger.exception("could not mark agent offline", extra={"agent_id": connection.agent_id})
            return
        logger.info("agent disconnected", extra={"agent_id": connection.agent_id})
        self.effects.after_commit(outcome, reason="agent_lost")
