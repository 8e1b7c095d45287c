"""The agent runtime: connect to `/ws/agents`, register, run a handler per task type, reconnect.

    agent = Agent(url=["http://replica-a:8080", "http://replica-b:8080"], key="ap_...", model="gpt-4")

    @agent.handler("generate-code")
    async def generate(ctx: TaskContext) -> dict[str, str]:
        await ctx.progress(0.5, "half way")
        ctx.report_usage(input_tokens=10, output_tokens=20)
        return {"code": "..."}

    asyncio.run(agent.run())

One socket at a time: a single reader loop parses every frame, a single writer drains the outbox queue.
Handlers run as asyncio tasks (sync ones in a worker thread) and outlive a dropped connection; their results
are kept until the server acknowledges them and are resent first after a reconnect, whose `register` names
them (`holding`) so that the server hands their leases to the new socket instead of running them again.

Several server URLs are tried in order: the agent moves to the next one when the current server cannot be
reached or closes with a "go elsewhere" code (1012 restart, 4010 shutting down, 1013 try again later).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agentplane import protocol as wire
from agentplane._sdk_context import Handler, HandlerResult, TaskContext, TaskFailed
from agentplane._sdk_jobs import Jobs
from agentplane._sdk_link import (
    FATAL_CLOSES,
    GO_ELSEWHERE,
    AgentRejected,
    Link,
    open_socket,
    parse,
    reconnect_delay,
    text,
    unparsed_assignment,
    until,
)
from agentplane.protocol import CapabilitySpec, CloseCode, Usage, WsErrorCode
from agentplane.urls import agent_urls, redacted

__all__ = [
    "Agent",
    "AgentRejected",
    "CapabilitySpec",
    "Handler",
    "HandlerResult",
    "TaskContext",
    "TaskFailed",
    "Usage",
]

logger = logging.getLogger("agentplane.sdk")

_H = TypeVar("_H", bound=Handler)

_REGISTERED_TIMEOUT = 15.0  # the server gives up on a silent register after 10 s


def _spec(capability: str | CapabilitySpec) -> CapabilitySpec:
    return capability if isinstance(capability, CapabilitySpec) else CapabilitySpec(name=capability)


class Agent:
    """A remote agent: handlers per task type, served over one WebSocket that is re-established on loss.

    ``accept_after``: seconds a handler runs before the agent tells the server it has started (`accept`, the
    task shows `running`); a handler that finishes sooner sends its result alone. 0 accepts at once.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None,
        key: str,
        model: str,
        capabilities: Sequence[str | CapabilitySpec] | None = None,
        *,
        max_concurrency: int = 4,
        agent_id: str | None = None,
        name: str | None = None,
        max_result_bytes: int = 1024 * 1024,
        accept_after: float = 0.02,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if accept_after < 0:
            raise ValueError("accept_after must not be negative")
        # In failover order; None or empty: $AGENTPLANE_URL, else the local default.
        self.urls = agent_urls(url)
        self._url_index = 0
        self.model = model
        self.name = name or ""
        self.max_concurrency = max_concurrency
        self._key = key
        # None: advertise one capability per handled task type, decided when run() starts.
        self._capabilities = None if capabilities is None else [_spec(cap) for cap in capabilities]
        # Refuse a bad id, name or model now rather than at the first connection: a stand-in capability
        # lets Register check them before any handler exists.
        wire.Register(agent_id=agent_id, name=self.name, model=model, capabilities=[_spec("placeholder")])
        self._agent_id = agent_id
        self._handlers: dict[str, Handler] = {}
        self._link: Link | None = None
        self._ws: ClientConnection | None = None
        self._draining = False
        self._started = False
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._jobs = Jobs(lambda: self._link, max_result_bytes, accept_after)

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        """The agent endpoint in use (or tried next)."""
        return self.urls[self._url_index]

    @property
    def agent_id(self) -> str | None:
        """The id given, or the one the server assigned at the first registration (kept on reconnect)."""
        return self._agent_id

    @property
    def active(self) -> int:
        """Handlers running now."""
        return len(self._jobs)

    @property
    def draining(self) -> bool:
        return self._draining

    def handler(self, task_type: str) -> Callable[[_H], _H]:
        """Decorator registering a sync or async handler for `task_type`."""

        def register(func: _H) -> _H:
            self.add_handler(task_type, func)
            return func

        return register

    def add_handler(self, task_type: str, func: Handler) -> None:
        self._handlers[task_type] = func

    async def run(self) -> None:
        """Serve until stop(). Returns when replaced by a newer connection (4009); raises AgentRejected."""
        if self._started:
            raise RuntimeError("an Agent runs once; create a new one to run again")
        self._started = True
        self._register_frame()  # fail fast on bad capabilities, before any connection
        failures = 0
        try:
            while not self._stop.is_set():
                registered, code, reason = await self._session()
                if self._stop.is_set():
                    return
                if code in FATAL_CLOSES:
                    raise AgentRejected(code, reason)
                if code == CloseCode.REPLACED:
                    logger.warning("replaced by a newer connection for agent %s; stopping", self._agent_id)
                    return
                failures = 1 if registered else failures + 1
                if len(self.urls) > 1 and (not registered or code in GO_ELSEWHERE):
                    self._url_index = (self._url_index + 1) % len(self.urls)
                delay = reconnect_delay(failures)
                target = redacted(self.url)
                logger.warning(
                    "disconnected (%s %s); reconnecting to %s in %.2f s", code, reason, target, delay
                )
                await until(asyncio.sleep(delay), self._stop)
        finally:
            self._stop.set()
            await self._jobs.cancel_all("agent stopped")
            self._finished.set()

    async def stop(self) -> None:
        """Close the socket, cancel running handlers (the server requeues their tasks) and wait for run()."""
        self._stop.set()
        if self._link is not None:
            self._link.close()
        elif self._ws is not None:  # still registering: no writer exists yet
            await self._ws.close(1000, "agent stopping")
        await self._jobs.cancel_all("agent stopped")
        if self._started:
            await self._finished.wait()

    async def drain(self) -> bool:
        """Tell the server to send nothing new, reject new assigns, and wait until every running handler has
        finished and its result is acknowledged (False if the agent stopped first). Bound the wait with
        asyncio.timeout(); the agent stays connected either way."""
        self._draining = True
        if self._link is not None:
            self._link.send(text(wire.Drain()))
        await until(self._jobs.idle.wait(), self._stop)
        return self._jobs.idle.is_set()

    # ------------------------------------------------------------------ one connection

    def _register_frame(self) -> wire.Register:
        capabilities = self._capabilities
        if capabilities is None:
            capabilities = [CapabilitySpec(name=task_type) for task_type in self._handlers]
        if not capabilities:
            raise ValueError("an agent needs at least one capability or handler")
        return wire.Register(
            agent_id=self._agent_id,
            name=self.name,
            model=self.model,
            capabilities=capabilities,
            max_concurrency=self.max_concurrency,
            task_types=sorted(self._handlers) or None,
            holding=self._jobs.holding(),
        )

    async def _session(self) -> tuple[bool, int | None, str]:
        """Connect, register and serve one socket; (registered, close code, close reason) once it is gone."""
        try:
            ws = await until(open_socket(self.url, self._key), self._stop)
        except InvalidStatus as exc:
            status = exc.response.status_code
            code = CloseCode.UNAUTHORIZED if status in (401, 403) else None
            return False, code, f"HTTP {status} at the handshake"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return False, None, repr(exc)
        if ws is None:
            return False, None, "stopped"
        self._ws = ws
        registered = False
        try:
            registered = await self._serve(ws)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            await ws.close()
        return registered, ws.close_code, ws.close_reason or ""

    async def _serve(self, ws: ClientConnection) -> bool:
        await ws.send(text(self._register_frame()))
        try:
            registered = await until(
                asyncio.wait_for(self._await_registered(ws), _REGISTERED_TIMEOUT), self._stop
            )
        except TimeoutError:
            logger.warning("no `registered` reply within %.0f s", _REGISTERED_TIMEOUT)
            return False
        if registered is None:
            return False
        self._agent_id = registered.agent_id
        logger.info("registered as %s on replica %s", registered.agent_id, registered.replica_id)
        link = Link(ws)
        # Unacked results go out before anything else. No await until the link is published, so a handler
        # finishing meanwhile either made it into this snapshot or sends on the new link itself.
        for result_text in self._jobs.unacked.values():
            link.send(result_text)
        if self._draining:
            link.send(text(wire.Drain()))
        self._link = link
        writer = asyncio.create_task(link.write())
        beats = asyncio.create_task(self._heartbeats(link, registered.heartbeat_interval))
        try:
            async for raw in ws:
                try:
                    self._dispatch(raw, link)
                except Exception:  # a bug handling one frame must not take the agent's socket down
                    logger.exception("could not handle a frame from the server")
        except ConnectionClosed:
            pass  # how a close other than 1000/1001 ends the loop; the session was registered all the same
        finally:
            self._link = None
            writer.cancel()
            beats.cancel()
            await asyncio.gather(writer, beats, return_exceptions=True)
        return True

    async def _await_registered(self, ws: ClientConnection) -> wire.Registered:
        while True:
            frame = parse(await ws.recv())
            if isinstance(frame, wire.Registered):
                return frame
            if isinstance(frame, wire.ErrorFrame):
                logger.warning("server error before registration: %s: %s", frame.code, frame.message)
            elif frame is not None:
                logger.warning("ignoring %s frame before registration", frame.type)

    async def _heartbeats(self, link: Link, interval: float) -> None:
        while True:
            await asyncio.sleep(max(1.0, interval))
            link.send(text(wire.Heartbeat(active=len(self._jobs))))

    # ------------------------------------------------------------------ frames from the server

    def _dispatch(self, raw: str | bytes, link: Link) -> None:
        frame = parse(raw)
        if isinstance(frame, wire.Ping):
            # model_construct: the nonce is echoed verbatim, whatever its length.
            link.send(text(wire.Pong.model_construct(nonce=frame.nonce)))
        elif isinstance(frame, wire.Assign):
            self._on_assign(frame, link)
        elif isinstance(frame, wire.Cancel):
            self._on_cancel(frame)
        elif isinstance(frame, wire.Ack):
            self._jobs.acknowledged(frame.assignment_id)
        elif isinstance(frame, wire.DrainRequest):
            logger.info("the server asked this agent to drain: %s", frame.reason or "no reason given")
            self._draining = True
        elif isinstance(frame, wire.ErrorFrame):
            logger.warning("server error %s: %s (ref %s)", frame.code, frame.message, frame.ref)
            # Resending would be refused again: an unknown assignment, or a result the server cannot store
            # (it records a failure in its place and acknowledges that).
            if frame.code in (WsErrorCode.UNKNOWN_ASSIGNMENT, WsErrorCode.INVALID_RESULT):
                self._jobs.forget(frame.ref)
        elif frame is None:
            if (assignment_id := unparsed_assignment(raw)) is not None:
                link.send(
                    text(wire.Reject(assignment_id=assignment_id, reason="the agent could not parse it"))
                )
        else:
            logger.debug("ignoring unexpected %s frame", frame.type)

    def _on_assign(self, frame: wire.Assign, link: Link) -> None:
        assignment_id = frame.assignment_id
        if assignment_id in self._jobs:
            logger.warning("duplicate assign %s ignored: it is already running", assignment_id)
            return
        if assignment_id in self._jobs.unacked:  # finished already: the result is what the server wants
            link.send(self._jobs.unacked[assignment_id])
            return
        handler = self._handlers.get(frame.task_type)
        if handler is None:
            reason = f"no handler for task type {frame.task_type!r}"
        elif self._draining:
            reason = "the agent is draining"
        elif len(self._jobs) >= self.max_concurrency:
            reason = f"at capacity ({self.max_concurrency} running)"
        else:
            self._jobs.start(handler, frame)
            return
        logger.info("rejecting %s (%s): %s", assignment_id, frame.task_type, reason)
        link.send(text(wire.Reject(assignment_id=assignment_id, reason=reason[:1000])))

    def _on_cancel(self, frame: wire.Cancel) -> None:
        if self._jobs.cancel(frame.assignment_id, frame.reason):
            logger.info("cancelled %s: %s", frame.assignment_id, frame.reason or "no reason given")
        elif frame.assignment_id in self._jobs.unacked:
            # A held result whose lease the server did not take back: it wants no result for it any more.
            logger.info("cancelled %s after it finished; its result is dropped", frame.assignment_id)
            self._jobs.acknowledged(frame.assignment_id)
        else:
            logger.debug("cancel for %s, which is not running", frame.assignment_id)
