"""One agent socket: a bounded outbox drained by a single writer, and the pings it awaits.

The writer task and the outbox exist only while there is something to send: an idle agent (most of a large
fleet) costs neither a task nor a deque (760 bytes even when empty), which is what keeps ten thousand
connected agents within the memory budget. The class has ``__slots__`` for the same reason.

A frame counts as delivered once the server's `send` has returned (it is in the transport then). An `assign`
still in the outbox when the socket closes never reached the agent: its id goes to ``undelivered`` and the
disconnect gives the task back to the queue without charging an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketState

from app.errors import CloseCode
from app.gateway.protocol import Assign, Frame
from app.gateway.transport import force_close

logger = logging.getLogger(__name__)

WRITE_QUEUE = 4096
CLOSE_TIMEOUT = 1.0  # seconds the close frame may wait for the transport before it is forced out
FORCED_CLOSE_GRACE = 10.0  # seconds a peer that stopped reading has to read the rest and the close frame


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _Assign:
    """An `assign` frame's text with its id, so an unsent one can be given back uncharged."""

    __slots__ = ("assignment_id", "text")

    def __init__(self, text: str, assignment_id: uuid.UUID) -> None:
        self.text = text
        self.assignment_id = assignment_id


_Item = str | _Assign


def _not_counted(direction: str, frame_type: str) -> None:
    pass


class Connection:
    __slots__ = (
        "__weakref__",
        "_in_flight",
        "_outbox",
        "_pings",
        "_reader",
        "_send_started",
        "_stopped_writer",
        "_writer",
        "agent_id",
        "close_code",
        "closed",
        "count_frame",
        "expect_back",
        "key_id",
        "model",
        "peer_close_code",
        "reader_stopped",
        "undelivered",
        "version",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        *,
        agent_id: str,
        model: str,
        version: int = 0,
        key_id: uuid.UUID | None = None,
    ) -> None:
        self.websocket = websocket
        self.agent_id = agent_id
        self.model = model
        self.version = version  # the registration this socket belongs to
        self.key_id = key_id  # the API key it authenticated with (None: the environment's admin key)
        self.closed = False
        self.close_code: int | None = None
        self.peer_close_code: int | None = None  # the code the agent closed with (1000: it is done for good)
        # Closed by the server expecting the agent back (the replica stopping, or declared dead and back): its
        # leases wait out the hand-over grace for it, as when the socket drops.
        self.expect_back = False
        self.undelivered: list[uuid.UUID] = []  # assigns that never reached the socket
        self._outbox: deque[_Item] | None = None  # created with the first frame queued, dropped once sent
        self._writer: asyncio.Task[None] | None = None  # None again once the writer has sent everything
        self._stopped_writer: asyncio.Task[None] | None = None  # the writer close() cancelled
        self._in_flight: _Item | None = None
        self._send_started = 0.0  # time.monotonic() when the frame in flight was handed to the server
        self._reader: asyncio.Task[None] | None = None
        self.reader_stopped = False  # a forced close cancelled the reader (our cancellation, not shutdown's)
        self._pings: dict[str, asyncio.Future[None]] = {}
        self.count_frame: Callable[[str, str], None] = _not_counted  # the endpoint sets the metric's

    def send(self, frame: Frame) -> bool:
        """Queue a frame; False when the socket is closing or the agent has stopped reading."""
        self.count_frame("out", getattr(frame, "type", "unknown"))  # every concrete frame has one
        text = frame.dump().decode()
        return self._queue(_Assign(text, frame.assignment_id) if isinstance(frame, Assign) else text)

    def send_raw(self, text: str) -> bool:
        return self._queue(text)

    def _queue(self, item: _Item) -> bool:
        if self.closed:
            return False
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        elif len(outbox) >= WRITE_QUEUE:
            # An agent this far behind cannot be trusted with leases; dropping it requeues its work.
            logger.warning("agent not reading; closing", extra={"agent_id": self.agent_id})
            self.close(CloseCode.TRY_AGAIN_LATER, "send queue full: the agent is not reading")
            return False
        outbox.append(item)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``. A writer stuck on a peer that stopped reading is cancelled (uvicorn's send
        waits for the transport before writing, so its frame was not written) and the close frame is forced
        out after CLOSE_TIMEOUT; the reader is then stopped, so the disconnect is handled at once."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        for future in self._pings.values():
            if not future.done():
                future.cancel()
        self._drop_outbox()
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        self._stopped_writer = writer
        self._writer = asyncio.get_running_loop().create_task(self._close(writer, code, reason))

    async def close_and_collect(self, code: int, reason: str = "") -> list[uuid.UUID]:
        """Close, wait until the writer has stopped (so nothing more reaches the socket) and return the
        assigns that never reached it."""
        self.close(code, reason)
        writer = self._stopped_writer
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)
        return list(self.undelivered)

    def stalled_for(self, now: float) -> float:
        """Seconds the frame in flight has waited for the peer to read (0 when nothing waits)."""
        return now - self._send_started if self._in_flight is not None else 0.0

    def bind_reader(self, task: asyncio.Task[None] | None) -> None:
        """The task reading this socket (None once it stops reading): a forced close wakes it."""
        self._reader = task

    def _drop_outbox(self) -> None:
        outbox, self._outbox = self._outbox, None
        for item in outbox or ():
            if isinstance(item, _Assign):
                self.undelivered.append(item.assignment_id)

    async def _drain(self) -> None:
        try:
            while outbox := self._outbox:
                item = self._in_flight = outbox.popleft()
                self._send_started = time.monotonic()
                await self.websocket.send_text(item if isinstance(item, str) else item.text)
                self._in_flight = None
            # Everything is sent: the next frame queued starts a writer (and an outbox) of its own.
            self._outbox = None
            if self._writer is asyncio.current_task():
                self._writer = None
        except asyncio.CancelledError:
            # close() cancelled us while the send waited for the transport: the frame was not written.
            if isinstance(self._in_flight, _Assign):
                self.undelivered.append(self._in_flight.assignment_id)
            self._in_flight = None
            raise
        except Exception:  # the peer went away; the reader sees the disconnect and cleans up
            self.closed = True
            self._in_flight = None
            self._drop_outbox()

    async def _close(self, writer: asyncio.Task[None] | None, code: int, reason: str) -> None:
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)
        if self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), CLOSE_TIMEOUT)
            return
        except TimeoutError:
            pass
        except Exception:
            return  # the peer is gone already
        forced = force_close(self.websocket, code, reason, grace=FORCED_CLOSE_GRACE)
        logger.info(
            "close frame forced out (%s)",
            code,
            extra={"agent_id": self.agent_id, "forced": forced},
        )
        reader = self._reader
        if reader is not None and not reader.done():
            self._reader = None
            self.reader_stopped = True
            reader.cancel()

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
