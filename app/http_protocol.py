"""uvicorn's HTTP/1.1 protocol with the read limits it lacks: header and body deadlines, a header size.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and nothing else: a connection that sends
nothing, or sends its headers a byte at a time (slowloris), or its body a byte at a time, holds a file
descriptor and a parser for as long as it likes. This subclass of the httptools protocol tracks where the
parser is in the current request and keeps one timer per connection:

- from the connection's start, and from the first byte of each later request, the headers must be complete
  within ``header_timeout``, else the connection is closed (nothing useful can be answered to half a request
  line); the headers may not exceed ``MAX_HEADER_BYTES`` either (431);
- from the end of the headers, the body must be complete within ``body_timeout``, else the client gets a 408
  problem+json when nothing has been answered yet, and the connection is closed.

Timers are armed only when a read ends mid-headers or mid-body, so a request that arrives in one read (nearly
every request on the hot path) costs no timer at all. WebSocket upgrades leave this protocol when their
headers are complete, so their deadline is disarmed before the socket changes hands.

The WebSocket protocol they move to is uvicorn's sans-I/O one made lighter (``LeanWebSocketProtocol``): each
connected agent holds one for as long as it stays connected, so what it keeps is paid ten thousand times.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from app.errors import PROBLEM_JSON, problem_bytes

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024


class _Reading(Enum):
    HEADERS = "headers"  # a request line or headers are expected (a new connection, or mid-request)
    BODY = "body"
    IDLE = "idle"  # between requests: uvicorn's keep-alive timer is in charge


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading = _Reading.HEADERS
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_for: _Reading | None = None
        self._header_bytes = 0

    @classmethod
    def configured(cls, *, header_timeout: float, body_timeout: float) -> type[GuardedHttpProtocol]:
        """The class uvicorn instantiates per connection (``uvicorn.Config(http=...)``), with these limits."""
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout, "body_timeout": body_timeout})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(_Reading.HEADERS)  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._disarm()  # closed, or upgraded to a WebSocket (which has timeouts of its own)
            return
        if self._reading is _Reading.HEADERS:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse_headers()
                return
        if self._reading is not self._deadline_for:
            if self._reading is _Reading.IDLE:
                self._disarm()
            else:
                self._arm(self._reading)

    # Parser callbacks: where the current request is.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._reading is not _Reading.HEADERS:
            self._reading = _Reading.HEADERS
            self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._reading = _Reading.BODY
        if self._deadline_for is _Reading.HEADERS:
            self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading = _Reading.IDLE
        self._header_bytes = 0
        super().on_message_complete()

    # The one timer.
    def _arm(self, reading: _Reading) -> None:
        self._disarm()
        timeout = self.header_timeout if reading is _Reading.HEADERS else self.body_timeout
        self._deadline = self.loop.call_later(timeout, self._expired)
        self._deadline_for = reading

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
            self._deadline_for = None

    def _expired(self) -> None:
        reading, self._deadline, self._deadline_for = self._deadline_for, None, None
        if self.transport.is_closing():
            return
        if reading is _Reading.BODY:
            if self.flow.read_paused:  # we stopped reading (the app is behind), not the client: wait on
                self._arm(_Reading.BODY)
                return
            logger.debug("closing %s: request body not received within %gs", self._peer(), self.body_timeout)
            self._answer_and_close(
                408, "request_timeout", "Request timeout", "the request body came too slowly"
            )
            return
        logger.debug("closing %s: request headers not received within %gs", self._peer(), self.header_timeout)
        self.transport.close()

    def _refuse_headers(self) -> None:
        logger.debug("closing %s: request headers over %d bytes", self._peer(), MAX_HEADER_BYTES)
        self._answer_and_close(
            431, "headers_too_large", "Request header fields too large", "request headers are too large"
        )

    def _answer_and_close(self, status: int, code: str, title: str, detail: str) -> None:
        """Answer ``status`` unless the request has an answer already, then close; later sends are dropped."""
        self._disarm()
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            path = cycle.scope.get("path") if cycle is not None else None
            body = problem_bytes(status, code, title, detail, path)
            head = (
                f"HTTP/1.1 {status} {title}\r\ncontent-type: {PROBLEM_JSON}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
        if cycle is not None:
            # What uvicorn does when the peer goes away: the app's receive() sees a disconnect, its send()
            # is ignored, so nothing is written after this answer.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with the same behaviour, costing less per open socket:

    - ``__slots__`` for its state (uvicorn's instance dict has too many keys to be a shared-key one: ~1.6 KB);
    - the handshake's request and response headers are emptied once read and written: websockets' parser keeps
      the request for as long as the socket is open, and uvicorn the response (the ASGI scope has its own copy
      of the request headers, which stays).

    It subclasses uvicorn's internals, so pyproject.toml holds uvicorn to the minor version it was written
    for; an attribute a later version adds lands in an instance dict, as before, and costs only the saving."""

    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The scope has its own copy of the headers now, and the response was built from them; websockets'
        # parser references the request until the socket closes.
        event.headers.clear()

    def start_keepalive(self) -> None:
        # Called once, right after the handshake's response was written: nothing reads the response again.
        super().start_keepalive()
        self.response.headers.clear()
