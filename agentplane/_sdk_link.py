"""The socket side of the SDK: connecting, the single writer, parsing, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agentplane.protocol import SERVER_FRAME, CloseCode, Frame, ServerFrame

logger = logging.getLogger("agentplane.sdk")

_T = TypeVar("_T")

# Reconnecting would only be refused again: the key, the model or the agent itself is not welcome.
FATAL_CLOSES = frozenset(
    {
        CloseCode.UNAUTHORIZED,
        CloseCode.MODEL_NOT_ALLOWED,
        CloseCode.UNSUPPORTED_PROTOCOL,
        CloseCode.DEREGISTERED,
    }
)
# The server asks the agent to go elsewhere: with several URLs, the next one is tried.
GO_ELSEWHERE = frozenset({CloseCode.SERVICE_RESTART, CloseCode.SERVER_DRAINING, CloseCode.TRY_AGAIN_LATER})
# 0.2-0.5 s first, doubling to a 5 s cap; the jitter spreads a fleet reconnecting after a server restart.
_RECONNECT_WAIT = wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.3)
# What we accept from the server: well above its 1 MiB default for agent frames, since assigns carry payloads.
_MAX_INCOMING_BYTES = 16 * 1024 * 1024


class AgentRejected(Exception):
    """The server refused this agent for good (close 4001, 4003, 4004 or 4011, or HTTP 401/403 at the
    handshake)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"agent rejected by the server ({code}): {reason}")
        self.code = code
        self.reason = reason


def reconnect_delay(failures: int) -> float:
    """Seconds to wait before reconnect attempt number `failures` (1 = the first retry)."""
    state = RetryCallState(AsyncRetrying(), None, (), {})
    state.attempt_number = max(1, failures)
    return _RECONNECT_WAIT(state)


def text(frame: Frame) -> str:
    return frame.dump().decode()


async def open_socket(url: str, key: str) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # No compression: frames are small JSON and deflate costs more CPU per agent than it saves.
    return await connect(url, additional_headers=headers, compression=None, max_size=_MAX_INCOMING_BYTES)


class Link:
    """One registered socket. Its outbox is the only path to the socket; None in it asks for a close."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()

    def send(self, frame_text: str) -> None:
        self.outbox.put_nowait(frame_text)

    def close(self) -> None:
        self.outbox.put_nowait(None)

    async def write(self) -> None:
        try:
            while (frame_text := await self.outbox.get()) is not None:
                await self.ws.send(frame_text)
            await self.ws.close(1000, "agent stopping")
        except ConnectionClosed:
            pass  # the reader sees the close too and ends the session


def parse(raw: str | bytes) -> ServerFrame | None:
    try:
        return SERVER_FRAME.validate_json(raw)
    except ValidationError as exc:
        logger.warning("ignoring a frame that does not parse: %s", exc.errors(include_url=False)[:1])
        return None


def unparsed_assignment(raw: str | bytes) -> uuid.UUID | None:
    """The assignment id of an `assign` frame that did not parse, so it can be rejected rather than left to
    sit on its lease until that expires."""
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        body = orjson.loads(raw)
        if body.get("type") == "assign":
            return uuid.UUID(str(body["assignment_id"]))
    return None


async def until(awaitable: Awaitable[_T], stop: asyncio.Event) -> _T | None:
    """Await `awaitable`, abandoning it (None) as soon as `stop` is set."""
    work = asyncio.ensure_future(awaitable)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()  # we were cancelled ourselves: take the work down with us
        raise
    finally:
        stopped.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    return None
