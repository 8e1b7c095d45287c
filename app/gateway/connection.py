"""One agent socket: a bounded outbox drained by a single writer, and the pings it awaits.

The writer task exists only while there is something to send: an idle agent (most of a large fleet) costs a
deque and no task, which is what keeps ten thousand connected agents within the memory budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from starlette.websockets import WebSocket, WebSocketState

from app.gateway.protocol import Frame

logger = logging.getLogger(__name__)

WRITE_QUEUE = 4096


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Connection:
    def __init__(self, websocket: WebSocket, *, agent_id: str, model: str, version: int = 0) -> None:
        self.websocket = websocket
        self.agent_id = agent_id
        self.model = model
        self.version = version  # the registration this socket belongs to
        self.closed = False
        self.close_code: int | None = None
        self._outbox: deque[str | _Close] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._pings: dict[str, asyncio.Future[None]] = {}

    def send(self, frame: Frame) -> bool:
        """Queue a frame; False when the socket is closing or the agent has stopped reading."""
        return self.send_raw(frame.dump().decode())

    def send_raw(self, text: str) -> bool:
        if self.closed:
            return False
        if len(self._outbox) >= WRITE_QUEUE:
            # An agent this far behind cannot be trusted with leases; dropping it requeues its work.
            logger.warning("agent not reading; closing", extra={"agent_id": self.agent_id})
            self.close(1013, "send queue full")
            return False
        self._outbox.append(text)
        self._wake_writer()
        return True

    def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        for future in self._pings.values():
            if not future.done():
                future.cancel()
        # Frames still queued for a peer we are closing on are moot (their work is requeued on disconnect).
        self._outbox.clear()
        self._outbox.append(_Close(code, reason))
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._outbox:
                item = self._outbox.popleft()
                if isinstance(item, _Close):
                    if self.websocket.application_state != WebSocketState.DISCONNECTED:
                        with contextlib.suppress(Exception):
                            await self.websocket.close(item.code, item.reason)
                    return
                await self.websocket.send_text(item)
        except Exception:  # the peer went away; the reader sees the disconnect and cleans up
            self.closed = True
            self._outbox.clear()

    async def drained(self, seconds: float) -> None:
        """Wait (up to ``seconds``) for the writer to finish what is queued, the close frame included."""
        writer = self._writer
        if writer is not None and not writer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(writer), seconds)

    def expect_pong(self, nonce: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[nonce] = future
        return future

    def pong(self, nonce: str) -> bool:
        future = self._pings.pop(nonce, None)
        if future is None or future.done():
            return False
        future.set_result(None)
        return True

    def forget_ping(self, nonce: str) -> None:
        self._pings.pop(nonce, None)
