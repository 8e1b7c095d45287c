"""Closing a socket whose peer has stopped reading, which ASGI alone cannot do.

uvicorn's ASGI `send` waits until the transport is writable before it writes anything, the close frame
included; a peer that stops reading keeps the transport paused, so neither a frame nor a close ever goes out
and the socket lingered until uvicorn's keepalive gave up (~50 s). Here the close frame is appended to the
transport's buffer directly, behind the frames already written: a peer that resumes reading gets them all and
then the close code. The transport is closed (it flushes, then ends) and aborted after ``grace`` seconds
whatever the peer does, so a peer that never reads again does not hold a file descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

from starlette.websockets import WebSocket
from websockets.frames import Close, Frame, Opcode

logger = logging.getLogger(__name__)

_MAX_HOPS = 8  # middleware wrappers between the route's `send` and the server's


def _transport(websocket: WebSocket) -> asyncio.Transport | None:
    """The server's transport under the ASGI `send` callable: uvicorn's protocol object owns both, and
    middleware wrap `send` in closures, which are followed a few hops."""
    pending: list[Any] = [getattr(websocket, "_send", None)]
    for _ in range(_MAX_HOPS):
        if not pending:
            return None
        send = pending.pop(0)
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if all(hasattr(transport, name) for name in ("write", "close", "abort", "is_closing")):
            return cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport
        for cell in getattr(send, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # an empty cell
                if callable(cell.cell_contents):
                    pending.append(cell.cell_contents)
    return None


def force_close(websocket: WebSocket, code: int, reason: str, *, grace: float) -> bool:
    """Queue a close frame behind what was written and end the connection; False when the transport
    cannot be reached (then the server's own timeouts end it)."""
    transport = _transport(websocket)
    if transport is None or transport.is_closing():
        return False
    payload = Close(code, reason[:120]).serialize()
    transport.write(Frame(Opcode.CLOSE, payload).serialize(mask=False))
    transport.close()
    asyncio.get_running_loop().call_later(grace, transport.abort)
    return True
