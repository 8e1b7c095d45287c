"""`/ws/agents`: handshake auth, the register deadline, one reader loop per socket, cleanup on close.

A database outage never becomes an HTTP 500 or a traceback per socket: the upgrade is accepted and closed
with 1013 (try again later), logged once per outage (app.db.outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import service as agents
from app.agents.registrar import Registrar
from app.config import Settings
from app.db.outage import OUTAGES, report_failure
from app.dispatch.effects import Effects
from app.errors import AgentRejected, CloseCode, WsErrorCode
from app.gateway.batcher import FrameBatcher
from app.gateway.channel import AgentChannel, DatabaseUnavailable
from app.gateway.connection import Connection
from app.gateway.hub import Hub
from app.gateway.protocol import (
    AGENT_FRAME_TYPES,
    PROTOCOL_VERSION,
    Cancel,
    DrainRequest,
    ErrorFrame,
    Register,
    Registered,
    parse_agent_frame,
)
from app.gateway.ratelimit import PATIENT, TokenBucket
from app.gateway.watch import SocketWatch
from app.security import KeyCache, Principal, Scope, authenticate, bearer_token, known_principal
from app.tasks.work import Outcome, Quarantine

logger = logging.getLogger(__name__)
router = APIRouter()

MAX_BAD_FRAMES = 20
MAX_LIMITED_FRAMES = 1000  # refused for the rate limit in a row: the peer is flooding, not busy (4002)
OUTAGE_CLOSE = "the database is unavailable; try again later"
RELEASED = "the lease was lost while the agent was away: the task went back to the queue"


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
        return parse_agent_frame(text)
    except ValidationError as exc:
        raise _refusal(text, exc) from None


def _refusal(text: str, exc: ValidationError) -> BadFrame:
    """Why a frame was refused, worked out again from the raw JSON (the rare path)."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        return BadFrame(WsErrorCode.INVALID_MESSAGE, "frame is not valid JSON")
    if not isinstance(raw, dict):
        return BadFrame(WsErrorCode.INVALID_MESSAGE, "frame must be a JSON object with a `type`")
    kind = raw.get("type")
    if kind not in AGENT_FRAME_TYPES:
        return BadFrame(WsErrorCode.UNKNOWN_TYPE, f"unknown frame type {str(kind)[:100]!r}", str(kind)[:100])
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'][1:]) or kind}: {err['msg']}" for err in exc.errors()
    )
    ref = raw.get("assignment_id") if isinstance(raw.get("assignment_id"), str) else kind
    return BadFrame(WsErrorCode.INVALID_MESSAGE, problems[:2000], str(ref)[:100])


async def _receive_text(websocket: WebSocket, connection: Connection | None = None) -> str | None:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        if connection is not None:
            connection.peer_close_code = message.get("code")
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
        self.registrar = Registrar(settings=settings, sessionmaker=sessionmaker)
        # Checked at twice the cache's pace, so a revoked key's sockets close within its window.
        self.watch = SocketWatch(sessionmaker=sessionmaker, hub=hub, interval=key_cache.ttl / 2)

    async def start(self) -> None:
        await self.batcher.start()
        await self.watch.start()

    async def stop(self) -> None:
        await self.watch.stop()
        await self.registrar.stop()
        await self.batcher.stop()

    async def serve(self, websocket: WebSocket) -> None:
        token = bearer_token(websocket.headers.get("authorization")) or websocket.query_params.get("token")
        admin_key = self.settings.admin_key.get_secret_value() if self.settings.admin_key else None
        try:
            # A reconnect storm presents the same few keys thousands of times: no session for a cached one.
            principal = known_principal(token, admin_key=admin_key, cache=self.key_cache) if token else None
            if principal is None:
                async with self.sessionmaker() as session:
                    principal = await authenticate(
                        session, token or "", admin_key=admin_key, cache=self.key_cache
                    )
        except Exception as exc:
            # Accepted and then closed, so the agent reads a close code it can act on, not an HTTP 500.
            await websocket.accept()
            await self._close_for(websocket, exc, "could not authenticate an agent socket")
            return
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
                    if frame.protocol == PROTOCOL_VERSION:
                        return frame
                    reason = f"unsupported protocol version {frame.protocol}; this server speaks "
                    await websocket.close(CloseCode.UNSUPPORTED_PROTOCOL, f"{reason}{PROTOCOL_VERSION}"[:120])
                    return None
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
        admin = Scope.ADMIN in principal.scopes
        undelivered = await self._retire_previous(register, principal.key_id, admin=admin)
        try:
            registered = await self.registrar.register(
                register, key_id=principal.key_id, admin=admin, undelivered=undelivered
            )
        except AgentRejected as exc:
            logger.info("agent refused: %s", exc.reason, extra={"model": register.model})
            await websocket.close(exc.close_code, exc.reason[:120])
            return
        except Exception as exc:
            await self._close_for(websocket, exc, "could not register an agent")
            return
        OUTAGES.succeeded()
        connection = Connection(
            websocket,
            agent_id=registered.id,
            model=registered.model,
            version=registered.version,
            key_id=principal.key_id,
        )
        connection.count_frame = self.effects.metrics.count_frame
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
        for assignment_id in registered.released:
            connection.send(Cancel(assignment_id=assignment_id, reason=RELEASED))
        if registered.status == "draining":  # drained before its old socket was seen to close: still draining
            connection.send(DrainRequest(reason="drained by an operator"))
        if registered.held or registered.released:
            logger.info(
                "agent reconnected holding %d leases: %d kept, %d released",
                len(registered.held) + len(registered.released),
                len(registered.held),
                len(registered.released),
                extra={"agent_id": registered.id},
            )
        effects.signals.agent_joined(registered.id)  # tasks only it can take may wait; the monitor pings it
        # The frame and the registration are not needed while the socket stays open (2-3 KB per agent).
        del register, registered
        channel = AgentChannel(
            connection, sessionmaker=self.sessionmaker, batcher=self.batcher, effects=self.effects
        )
        reader = asyncio.current_task()
        connection.bind_reader(reader)
        try:
            await self._read_loop(websocket, connection, channel)
        except asyncio.CancelledError:
            # A forced close (the peer stopped reading) stops the reader so the disconnect is handled now;
            # any other cancellation (shutdown) goes on.
            if not connection.reader_stopped or (reader is not None and reader.uncancel() > 0):
                raise
        finally:
            connection.bind_reader(None)
            await self._cleanup(connection)

    async def _retire_previous(
        self, register: Register, key_id: uuid.UUID | None, *, admin: bool
    ) -> list[uuid.UUID]:
        """A reconnect whose previous socket is on this replica: that socket is closed (4009) before the
        registration requeues its work, and the assigns it never wrote are returned, so the requeue charges
        only what reached the agent. Only a key that may take the agent over retires its socket (another
        key's `register` is refused by the registry and must not close it), and only for an allowed model."""
        previous = self.hub.get(register.agent_id) if register.agent_id else None
        allowed = self.settings.allowed_models
        if (
            previous is None
            or (previous.key_id != key_id and not admin)
            or (allowed and register.model not in allowed)
        ):
            return []
        self.hub.detach(previous)  # its own cleanup then leaves the agent to this registration
        self.effects.fleet.agent_left(previous.agent_id)
        return await previous.close_and_collect(
            CloseCode.REPLACED, "replaced by a newer connection with the same agent_id"
        )

    async def _close_for(self, websocket: WebSocket, exc: Exception, message: str) -> None:
        """Close a socket whose setup failed: 1013 for a database outage (logged once), else 1011."""
        if report_failure(logger, exc, message):
            code, reason = CloseCode.TRY_AGAIN_LATER, OUTAGE_CLOSE
        else:
            code, reason = CloseCode.INTERNAL_ERROR, f"{message}; try again"
        with contextlib.suppress(Exception):
            await websocket.close(code, reason)

    async def _read_loop(self, websocket: WebSocket, connection: Connection, channel: AgentChannel) -> None:
        bad = limited = 0
        bucket = TokenBucket(self.settings.ws_frame_rate, self.settings.ws_frame_burst)
        while not connection.closed:
            text = await _receive_text(websocket, connection)
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
            connection.count_frame("in", frame.type)
            if wait := bucket.take():
                if not isinstance(frame, PATIENT):
                    limited += 1
                    connection.send(self._rate_limited(frame))
                    if limited >= MAX_LIMITED_FRAMES:
                        connection.close(
                            CloseCode.PROTOCOL_VIOLATION, "frame rate limit exceeded persistently"
                        )
                    continue
                while wait:  # an answer is never dropped: it waits for its token (TCP slows the agent)
                    await asyncio.sleep(wait)
                    wait = bucket.take()
            limited = 0
            try:
                await channel.handle(frame)
            except DatabaseUnavailable:
                connection.close(CloseCode.TRY_AGAIN_LATER, OUTAGE_CLOSE)

    def _rate_limited(self, frame: Any) -> ErrorFrame:
        ref = getattr(frame, "assignment_id", None) or frame.type
        rate = self.settings.ws_frame_rate
        return ErrorFrame(
            code=WsErrorCode.RATE_LIMITED,
            message=f"more than {rate:g} frames/s (burst {self.settings.ws_frame_burst}); frame dropped",
            ref=str(ref),
        )

    def _hands_over(self, connection: Connection) -> bool:
        """Whether the socket's leases wait for the agent to reconnect and claim them (the hand-over grace):
        yes when the connection was lost, or the server closed it expecting the agent back (this replica
        stopping, or declared dead and back); no when the agent said goodbye (1000: nothing it held will be
        claimed) or the server closed it for misbehaving (a slow reader, a protocol violation, a revoked key:
        requeued at once, as before)."""
        return (
            self.settings.handover_grace > 0
            and connection.peer_close_code != 1000
            and (connection.close_code is None or connection.expect_back)
        )

    async def _disconnect(self, connection: Connection, *, handover: bool, goodbye: bool) -> Outcome:
        async with self.sessionmaker() as session:
            outcome = await agents.disconnect(
                session,
                connection.agent_id,
                replica_id=self.settings.replica_id,
                version=connection.version,
                undelivered=connection.undelivered,
                handover=handover,
                # Work lost with the agent is on its record, unless this replica closed it for stopping.
                quarantine=None
                if connection.close_code == CloseCode.SERVER_DRAINING
                else Quarantine.of(self.settings),
                goodbye=goodbye,
            )
            await session.commit()
            return outcome

    async def _cleanup(self, connection: Connection) -> None:
        handover = self._hands_over(connection)
        # The agent closed its socket itself, cleanly: what a drained agent does when it is done.
        goodbye = connection.peer_close_code == 1000 and connection.close_code is None
        connection.close(1000, "bye")
        await connection.drained(5)
        if not self.hub.detach(connection):
            return  # replaced by a newer connection, which owns the agent now
        self.effects.fleet.agent_left(connection.agent_id)
        try:
            # Shielded with its own session and commit, so a cancelled handler (shutdown) still records it.
            outcome = await asyncio.shield(self._disconnect(connection, handover=handover, goodbye=goodbye))
        except Exception as exc:
            # The reaper recovers the leases when they lapse; nothing is lost, only delayed.
            report_failure(logger, exc, "could not mark agent offline", agent_id=connection.agent_id)
            return
        logger.info("agent disconnected", extra={"agent_id": connection.agent_id})
        self.effects.after_commit(outcome, reason="agent_lost")
