"""The work an agent holds: running handlers, and the results the server has not acknowledged yet.

Both outlive a connection; whatever socket is current when a handler finishes carries its result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentplane import tracing
from agentplane._sdk_context import Handler, TaskContext, encode_result, run_handler
from agentplane._sdk_link import Link, text
from agentplane.protocol import Accept, Assign, Progress, Result

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

logger = logging.getLogger("agentplane.sdk")

_PROGRESS_BACKLOG = 256  # progress is advisory: past this many queued frames it is dropped


@dataclass(frozen=True)
class _Job:
    task: asyncio.Task[None]
    ctx: TaskContext
    accept_timer: asyncio.TimerHandle | None


class Jobs:
    def __init__(
        self, current_link: Callable[[], Link | None], max_result_bytes: int, accept_after: float = 0.0
    ) -> None:
        self._current_link = current_link
        self._max_result_bytes = max_result_bytes
        self._accept_after = accept_after
        self._running: dict[uuid.UUID, _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # running jobs plus cancelled ones winding down
        self.unacked: dict[uuid.UUID, str] = {}  # assignment id -> result frame text, in finishing order
        self.idle = asyncio.Event()  # set while nothing runs and every result is acknowledged
        self.idle.set()
        # None unless OTEL_* configures tracing (agentplane.tracing): then each handler runs in a span.
        self._tracer = tracing.tracer("agentplane.sdk", "agentplane-agent")

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, assignment_id: uuid.UUID) -> bool:
        return assignment_id in self._running

    def start(self, handler: Handler, frame: Assign) -> None:
        """Run the handler. The `accept` goes out once it has run for ``accept_after`` seconds: a handler
        that finishes sooner sends its result alone (assigned -> succeeded is a legal move), which spares
        the server a frame and a write per task."""
        ctx = TaskContext(frame, self._emit_progress)
        task = asyncio.create_task(self._execute(handler, ctx), name=f"agentplane-task-{ctx.assignment_id}")
        if self._accept_after > 0:
            timer = asyncio.get_running_loop().call_later(self._accept_after, self._accept, ctx)
        else:
            timer = None
            self._accept(ctx)
        self._running[ctx.assignment_id] = _Job(task, ctx, timer)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._update_idle()

    def cancel(self, assignment_id: uuid.UUID, reason: str) -> bool:
        job = self._running.pop(assignment_id, None)
        if job is None:
            return False
        if job.accept_timer is not None:
            job.accept_timer.cancel()
        # The flag is what a sync handler sees: cancelling its task cannot stop its thread.
        job.ctx._cancel(reason)
        job.task.cancel()
        self._update_idle()
        return True

    async def cancel_all(self, reason: str) -> None:
        for job in self._running.values():
            job.ctx._cancel(reason)
            if job.accept_timer is not None:
                job.accept_timer.cancel()
        self._running.clear()
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._update_idle()

    def holding(self) -> list[uuid.UUID]:
        """What a reconnecting agent still holds: handlers running, then results not yet acknowledged."""
        held = list(self._running) + [key for key in self.unacked if key not in self._running]
        return held[:10_000]  # the protocol's bound; beyond it the server requeues the rest

    def acknowledged(self, assignment_id: uuid.UUID) -> None:
        self.unacked.pop(assignment_id, None)
        self._update_idle()

    def forget(self, ref: str | None) -> None:
        """The server has no such assignment for this agent: a result for it would never be acknowledged."""
        with contextlib.suppress(ValueError, TypeError):
            self.acknowledged(uuid.UUID(str(ref)))

    async def _execute(self, handler: Handler, ctx: TaskContext) -> None:
        try:
            if self._tracer is None:
                result = await run_handler(handler, ctx)
            else:
                result = await _traced(self._tracer, handler, ctx)
        finally:
            job = self._running.get(ctx.assignment_id)
            if job is not None and job.ctx is ctx:
                del self._running[ctx.assignment_id]
                if job.accept_timer is not None:
                    job.accept_timer.cancel()
        if result is not None:
            result_text = encode_result(result, self._max_result_bytes)
            self.unacked[ctx.assignment_id] = result_text
            link = self._current_link()
            if link is not None:
                link.send(result_text)
        self._update_idle()

    def _accept(self, ctx: TaskContext) -> None:
        link = self._current_link()
        if link is not None and not ctx.cancelled:
            link.send(text(Accept(assignment_id=ctx.assignment_id)))

    def _emit_progress(self, frame: Progress) -> None:
        link = self._current_link()
        if link is None or frame.assignment_id not in self._running:
            return
        if link.outbox.qsize() >= _PROGRESS_BACKLOG:
            logger.debug("progress for %s dropped: the outbox is backed up", frame.assignment_id)
            return
        link.send(text(frame))

    def _update_idle(self) -> None:
        if self._running or self.unacked:
            self.idle.clear()
        else:
            self.idle.set()


async def _traced(tracer: Tracer, handler: Handler, ctx: TaskContext) -> Result | None:
    """The handler in a span that continues the `assign` frame's trace context; current while it runs, so
    a provider call (agentplane.providers) or the handler's own spans nest under it."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes: dict[str, Any] = {
        "agentplane.task.id": str(ctx.task_id),
        "agentplane.task.type": ctx.task_type,
        "agentplane.assignment.id": str(ctx.assignment_id),
        "agentplane.task.attempt": ctx.attempt,
    }
    with tracer.start_as_current_span(
        f"handle {ctx.task_type}",
        context=tracing.parent(ctx.traceparent),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        result = await run_handler(handler, ctx)
        if result is None:
            span.add_event("cancelled", {"reason": ctx.cancel_reason})
        elif result.status == "failed" and result.error is not None:
            span.set_attribute("error.type", result.error.code)
            span.set_attribute("agentplane.error.retryable", result.error.retryable)
            span.set_status(Status(StatusCode.ERROR, result.error.message[:200]))
        return result
