"""An A2A agent's "connection": what the hub, the dispatcher, the health monitor and the bus hold for it.

It is a Connection (those modules are typed on it, and stay unchanged) whose frames go out as A2A calls made
with the official a2a-sdk client instead of text on a socket:

- `assign` starts an A2A `SendStreamingMessage` (`SendMessage` and `GetTask` polls when the card does not
  stream) in a task of its own; the events that come back become `accept`, `progress`, `reject` and `result`
  frames (app.interop.a2a_agent_mapping) handed to the same AgentChannel a socket's reader feeds, so the
  frame batcher records them: leases, fencing, retries and usage as for any agent;
- `cancel` becomes `CancelTask` (and the call in flight is dropped: the assignment has ended already);
- `ping` fetches the Agent Card: a card that cannot be fetched is a missed pong, so three in a row make the
  agent unhealthy like any other;
- a transport error (the agent unreachable, the stream cut) closes the connection, which takes the path of a
  closed socket: the agent goes offline and its work back to the queue (app.interop.a2a_registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import httpx
from a2a.client import A2ACardResolver, A2AClientError, Client
from a2a.types.a2a_pb2 import CancelTaskRequest, GetTaskRequest, SendMessageRequest
from a2a.utils.errors import A2AError
from starlette.websockets import WebSocket

from app.errors import CloseCode
from app.gateway.connection import Connection
from app.gateway.protocol import Assign, Cancel, Frame, Ping, Result, ResultError
from app.interop.a2a_agent_mapping import Frame as AgentFrame
from app.interop.a2a_agent_mapping import Translation, message_of

if TYPE_CHECKING:
    from app.gateway.channel import AgentChannel

logger = logging.getLogger(__name__)
# The SDK logs every card it fetches, whole, at INFO: with a fetch per health round that floods the log.
logging.getLogger("a2a.client.card_resolver").setLevel(logging.WARNING)

POLL_INTERVAL = 0.5  # seconds between GetTask calls for an agent that does not stream
CANCEL_TIMEOUT = 10.0  # seconds a CancelTask may take before the call in flight is dropped anyway
LOST = "the A2A agent could not be reached"


class _Run:
    __slots__ = ("cancelled", "task", "translation")

    def __init__(self, translation: Translation) -> None:
        self.translation = translation
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False


class A2AConnection(Connection):
    def __init__(
        self,
        *,
        agent_id: str,
        model: str,
        version: int,
        client: Client,
        http: httpx.AsyncClient,
        card_url: str,
        on_closed: Callable[[A2AConnection], Awaitable[None]],
    ) -> None:
        # No socket: every method that would touch one is overridden below.
        super().__init__(cast(WebSocket, None), agent_id=agent_id, model=model, version=version, key_id=None)
        self.client = client
        self.http = http
        self.card_url = card_url
        self.channel: AgentChannel | None = None  # set by the registry once the connection is attached
        self._on_closed = on_closed
        self._runs: dict[uuid.UUID, _Run] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closer: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- what the hub and the others call

    def send(self, frame: Frame) -> bool:
        if self.closed:
            return False
        self.count_frame("out", getattr(frame, "type", "unknown"))
        if isinstance(frame, Assign):
            run = self._runs[frame.assignment_id] = _Run(Translation(frame))
            run.task = self._spawn(self._call(run), f"a2a-assign-{frame.assignment_id}")
        elif isinstance(frame, Cancel):
            self._cancel(frame.assignment_id)
        elif isinstance(frame, Ping):
            self._spawn(self._check(frame.nonce), f"a2a-health-{self.agent_id}")
        # ack, error, registered, drain: nothing to tell an A2A agent (routing already stops for a drain).
        return True

    def send_raw(self, text: str) -> bool:
        return not self.closed

    def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        for future in self._pings.values():
            if not future.done():
                future.cancel()
        self._closer = asyncio.get_running_loop().create_task(self._finish(reason), name="a2a-close")

    async def close_and_collect(self, code: int, reason: str = "") -> list[uuid.UUID]:
        self.close(code, reason)
        await self.drained(CANCEL_TIMEOUT)
        return list(self.undelivered)

    def stalled_for(self, now: float) -> float:
        return 0.0  # nothing is written to a peer that could stop reading

    async def drained(self, seconds: float) -> None:
        closer = self._closer
        if closer is not None and not closer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(closer), seconds)

    # ---------------------------------------------------------------- the A2A calls

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _call(self, run: _Run) -> None:
        translation = run.translation
        assignment_id = translation.assign.assignment_id
        try:
            request = SendMessageRequest(message=message_of(translation.assign))
            stream = self.client.send_message(request)
            try:
                async for event in stream:
                    await self._forward(run, translation.feed(event))
                    if translation.done or run.cancelled:
                        return
            finally:
                aclose = getattr(stream, "aclose", None)  # ends the HTTP stream now, not when collected
                if aclose is not None:
                    await aclose()
            # The stream (or the single answer of a card that does not stream) ended with the task open.
            while translation.a2a_task_id and not (translation.done or run.cancelled):
                await asyncio.sleep(POLL_INTERVAL)
                task = await self.client.get_task(GetTaskRequest(id=translation.a2a_task_id))
                await self._forward(run, translation.task(task))
            if not (translation.done or run.cancelled):
                raise A2AClientError("the agent's answer ended without a task to follow")
        except (A2AClientError, httpx.HTTPError) as exc:
            transport = exc if isinstance(exc, httpx.TransportError) else exc.__cause__
            if not isinstance(transport, httpx.TransportError):
                # The agent answered, badly (an HTTP error status, a body that is not A2A): this task failed,
                # not the agent; its other work goes on.
                error = ResultError(
                    code="a2a_error", message=str(exc)[:10_000] or "bad answer", retryable=True
                )
                await self._forward(run, [Result(assignment_id=assignment_id, status="failed", error=error)])
                return
            if isinstance(transport, httpx.ConnectError) and not translation.a2a_task_id:
                self.undelivered.append(assignment_id)  # the message never reached the agent: no charge
            if not self.closed:
                logger.warning("A2A agent unreachable: %s", str(exc)[:300], extra={"agent_id": self.agent_id})
                self.close(CloseCode.TRY_AGAIN_LATER, LOST)
        except A2AError as exc:  # the agent answered with a JSON-RPC error: this task failed, not the agent
            error = ResultError(
                code="a2a_error", message=str(exc)[:10_000] or type(exc).__name__, retryable=True
            )
            await self._forward(run, [Result(assignment_id=assignment_id, status="failed", error=error)])
        except Exception:  # a bug: the agent's work goes back to the queue rather than hang
            logger.exception("A2A call failed", extra={"agent_id": self.agent_id})
            self.close(CloseCode.INTERNAL_ERROR, "A2A call failed")
        finally:
            if self._runs.get(assignment_id) is run:
                del self._runs[assignment_id]
            if run.cancelled and translation.a2a_task_id and not translation.done:
                await self._cancel_remote(translation.a2a_task_id)

    async def _forward(self, run: _Run, frames: list[AgentFrame]) -> None:
        channel = self.channel
        for frame in frames:
            if self.closed or run.cancelled or channel is None:
                return
            self.count_frame("in", frame.type)
            await channel.handle(frame)

    def _cancel(self, assignment_id: uuid.UUID) -> None:
        """The assignment ended on our side (cancelled, lapsed, requeued): nothing the agent sends for it
        counts any more. The call's task sends `CancelTask` once it knows the A2A task's id."""
        run = self._runs.get(assignment_id)
        if run is None or run.cancelled:
            return
        run.cancelled = True
        a2a_task_id = run.translation.a2a_task_id
        if a2a_task_id is not None and run.task is not None:
            run.task.cancel()  # its `finally` sends CancelTask

    async def _cancel_remote(self, a2a_task_id: str) -> None:
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await self.client.cancel_task(CancelTaskRequest(id=a2a_task_id))
        except (A2AError, httpx.HTTPError, TimeoutError) as exc:
            logger.info("CancelTask failed: %s", str(exc)[:300], extra={"agent_id": self.agent_id})

    async def _check(self, nonce: str) -> None:
        """A health check: the card fetched with the agent's headers answers the ping."""
        try:
            await A2ACardResolver(self.http, self.card_url).get_agent_card(relative_card_path="/")
        except A2AClientError as exc:
            # The monitor logs the agent going unhealthy; a line per missed round would only repeat it.
            logger.debug("A2A card fetch failed: %s", str(exc)[:300], extra={"agent_id": self.agent_id})
            return
        self.pong(nonce)

    async def _finish(self, reason: str) -> None:
        """After a close: stop the calls in flight (their assignments go back to the queue by the disconnect),
        tell the agent to stop what it started, and hand the agent to the registry's cleanup."""
        runs = list(self._runs.values())
        for run in runs:
            run.cancelled = True
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(run.task for run in runs if run.task is not None), return_exceptions=True)
        try:
            await self._on_closed(self)
        finally:
            for task in list(self._background):
                task.cancel()
            await self.http.aclose()
        logger.info("A2A agent connection closed: %s", reason, extra={"agent_id": self.agent_id})
