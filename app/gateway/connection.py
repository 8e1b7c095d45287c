"""One agent socket: a bounded writer queue drained by a single writer task, and the pings it awaits."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketState

from app.gateway.protocol import Frame

logger = logging.getLogger(__name__)

WRITE_QUEUE = 4096
_CLOSE = object()


class Connection:
    def __init__(self, websocket: WebSocket, *, agent_id: str, model: str, version: int = 0) -> None:
        self.websocket = websocket
        self.agent_id = agent_id
        self.model = model
        self.version = version  # the registration this socket belongs to
        self.closed = False
        self.close_code: int | None = None
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=WRITE_QUEUE)
        self._pings: dict[str, asyncio.Future[None]] = {}

    def send(self, frame: Frame) -> bool:
        """Queue a frame; False when the socket is closing or the agent has stopped reading."""
        return self.send_raw(frame.dump().decode())

    def send_raw(self, text: str) -> bool:
        if self.closed:
            return False
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            # An agent this far behind cannot be trusted with leases; dropping it requeues its work.
            logger.warning("agent not reading; closing", extra={"agent_id": self.agent_id})
            self.close(1013, "send queue full")
            return False
        return True

    def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        for future in self._pings.values():
            if not future.done():
                future.cancel()
        if self._queue.full():
            # Frames queued for a peer we are closing on are moot (their work is requeued on disconnect);
            # the close itself must get through.
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put_nowait((_CLOSE, code, reason))

    async def run_writer(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, tuple) and item and item[0] is _CLOSE:
                    _, code, reason = item
                    if self.websocket.application_state != WebSocketState.DISCONNECTED:
                        with contextlib.suppress(Exception):
                            await self.websocket.close(code, reason)
                    return
                assert isinstance(item, str)
                await self.websocket.send_text(item)
        except Exception:  # the peer went away; the reader sees the disconnect and cleans up
            self.closed = True

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
