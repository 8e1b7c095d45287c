"""The server's spans: one trace per task, from the client's `traceparent` to the `assign` frame and back.

Off unless the OTEL_* environment configures an exporter (agentplane.tracing). ``SERVER`` is None then, and
every span site is one ``if ... is None`` branch: no span objects, no extra allocation, no database work.

What a task's trace holds (docs/operations.md, Tracing):

    client span (the client's `traceparent`, or none: a new trace)
      task.submit                the request that wrote the task; its context is stored as tasks.traceparent
        task.queue               from when the task became due until a dispatcher claimed it (one per attempt)
          task.dispatch          claim, lease and the `assign` frame; its context travels on the frame
            handle <type>        the agent's handler (the SDK), and its provider call under it
            task.result          the result committed, or the attempt's end: retry and requeue as events

The queue and dispatch spans are written when the task is claimed, with the times the database recorded,
so they need nothing kept between the submit and the claim (which may be on another replica). The
dispatch span's context is kept in memory until the attempt ends, for its `task.result` child; a result that
reaches another replica (a hand-over) gets no `task.result` span there. Collaboration sessions: see
``session_span``/``step_span``; their subtasks are submitted with the step's context.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentplane import tracecontext, tracing
from app.logs import enable_trace_ids

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from app.tasks.lifecycle import Lease
    from app.tasks.work import Finished

# Attempts whose result span is still to come, at most: a result that never returns here (its agent moved to
# another replica) must not grow the map forever; past the bound the oldest are forgotten.
MAX_OPEN = 100_000


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1e9)


class ServerTracing:
    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._open: dict[uuid.UUID, Any] = {}  # assignment id -> its dispatch span's context

    # ------------------------------------------------------------------ submit

    @staticmethod
    def request_parent(header: str | None) -> Context:
        """The parent of this request's spans: FastAPI's request span when FastAPI traces the request (it
        has continued the `traceparent` header already), else the header's context (a new trace when it is
        missing or invalid, as W3C asks of a receiver)."""
        from opentelemetry import context, trace

        if trace.get_current_span().get_span_context().is_valid:
            return context.get_current()
        return tracing.parent(header)

    @contextmanager
    def submit(self, body: str | None, header: str | None, task_type: str) -> Iterator[Span]:
        """The submit span of one task (current, so log lines carry its ids): a child of the body's
        `traceparent` when it has one, else of the request. Its `traceparent` is what the task stores."""
        from opentelemetry.trace import SpanKind

        with self.tracer.start_as_current_span(
            "task.submit",
            context=tracing.parent(body) if body is not None else self.request_parent(header),
            kind=SpanKind.INTERNAL,
            attributes={"agentplane.task.type": task_type},
        ) as span:
            yield span

    @contextmanager
    def submit_batch(
        self, bodies: Sequence[str | None], header: str | None, types: Sequence[str]
    ) -> Iterator[list[Span]]:
        """A submit span per task of a batch, each in its own `traceparent`'s trace (or the request's)."""
        request = self.request_parent(header)
        spans = [
            self.tracer.start_span(
                "task.submit",
                context=tracing.parent(body) if body is not None else request,
                attributes={"agentplane.task.type": task_type},
            )
            for body, task_type in zip(bodies, types, strict=True)
        ]
        try:
            yield spans
        finally:
            for span in spans:
                span.end()

    @staticmethod
    def traceparent(span: Span) -> str:
        return tracing.traceparent_of(span)

    @staticmethod
    def submitted(span: Span, task_id: uuid.UUID, status: str, created: bool) -> None:
        span.set_attribute("agentplane.task.id", str(task_id))
        span.set_attribute("agentplane.task.status", status)
        if not created:
            span.add_event("idempotency key repeated: the existing task is returned")

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, lease: Lease, claimed_ns: int | None, replica_id: str) -> tuple[Span, str]:
        """The attempt's queue span (ended) and dispatch span (open until ``sent``), and the `traceparent`
        for its `assign` frame. ``claimed_ns``: when the claim began (None: placed at submit, no claim)."""
        from opentelemetry import trace

        now = time.time_ns()
        claimed = now if claimed_ns is None else claimed_ns
        attributes: dict[str, Any] = {
            "agentplane.task.id": str(lease.task_id),
            "agentplane.task.type": lease.task_type,
            "agentplane.task.attempt": lease.attempt,
        }
        queue = self.tracer.start_span(
            "task.queue",
            context=tracing.parent(lease.traceparent),
            start_time=min(_ns(lease.available_at), claimed),
            attributes={**attributes, "agentplane.placed_at_submit": claimed_ns is None},
        )
        queue.end(end_time=claimed)
        span = self.tracer.start_span(
            "task.dispatch",
            context=trace.set_span_in_context(queue),
            start_time=claimed,
            attributes={
                **attributes,
                "agentplane.assignment.id": str(lease.assignment_id),
                "agentplane.agent.id": lease.agent_id,
                "agentplane.replica.id": replica_id,
                "gen_ai.request.model": lease.model,
            },
        )
        span.add_event("leased", timestamp=max(claimed, _ns(lease.assigned_at)))
        context = span.get_span_context()
        if len(self._open) >= MAX_OPEN:
            del self._open[next(iter(self._open))]
        self._open[lease.assignment_id] = context
        return span, tracing.traceparent_of(span)

    def sent(self, span: Span, assignment_id: uuid.UUID, delivered: bool) -> None:
        if delivered:
            span.add_event("assign sent")
        else:
            from opentelemetry.trace import Status, StatusCode

            self._open.pop(assignment_id, None)
            span.add_event("agent gone before assign was sent: requeued")
            span.set_status(Status(StatusCode.ERROR, "undelivered"))
        span.end()

    # ------------------------------------------------------------------ the attempt's end

    def finished(self, items: Sequence[Finished], reason: str) -> None:
        """After a commit (app.dispatch.effects): a `task.result` span per attempt that ended, a child of
        its dispatch span. ``reason``: what ended it (result, agent_lost, lease_lapsed, ...)."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, Status, StatusCode

        for item in items:
            context = self._open.pop(item.assignment_id, None) if item.assignment_id is not None else None
            if context is None:
                continue
            span = self.tracer.start_span(
                "task.result",
                context=trace.set_span_in_context(NonRecordingSpan(context)),
                attributes={
                    "agentplane.task.id": str(item.task_id),
                    "agentplane.task.status": item.status,
                    "agentplane.assignment.id": str(item.assignment_id),
                    "agentplane.end_reason": reason,
                    "gen_ai.usage.input_tokens": item.input_tokens,
                    "gen_ai.usage.output_tokens": item.output_tokens,
                },
            )
            if item.executed:
                span.set_attribute("agentplane.execution_s", item.duration_s)
            if item.rejected:
                span.add_event("rejected by the agent: back to the queue")
            elif item.retried:
                span.add_event("retry scheduled", {"reason": reason})
            elif item.status == "pending":
                span.add_event("requeued", {"reason": reason})
            if item.status in ("failed", "timed_out"):
                span.set_status(Status(StatusCode.ERROR, item.status))
            span.end()

    # ------------------------------------------------------------------ sessions

    @contextmanager
    def session(self, header: str | None, strategy: str) -> Iterator[Span]:
        """A session's span (current), a child of the request: its `traceparent` is stored with the
        session, and every step is a child of it, so a session is one trace."""
        with self.tracer.start_as_current_span(
            "session.create",
            context=self.request_parent(header),
            attributes={"agentplane.session.strategy": strategy},
        ) as span:
            yield span

    def step(self, session_traceparent: str | None, session_id: uuid.UUID, round_: int) -> Span:
        """One step of a session that submits subtasks: they are submitted with its `traceparent`."""
        return self.tracer.start_span(
            "session.step",
            context=tracing.parent(session_traceparent),
            attributes={"agentplane.session.id": str(session_id), "agentplane.session.round": round_},
        )

    def session_ended(
        self,
        session_traceparent: str | None,
        session_id: uuid.UUID,
        status: str,
        error: dict[str, Any] | None,
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.tracer.start_span(
            "session.finish",
            context=tracing.parent(session_traceparent),
            attributes={"agentplane.session.id": str(session_id), "agentplane.session.status": status},
        )
        if error is not None:
            span.set_attribute("error.type", str(error.get("code", "error")))
            span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:200]))
        span.end()


SERVER: ServerTracing | None = None


def setup() -> ServerTracing | None:
    """Once per process (each worker its own): the tracer, if OTEL_* configures one."""
    global SERVER
    if SERVER is None:
        tracer = tracing.tracer("agentplane.server", "agentplane")
        if tracer is not None:
            SERVER = ServerTracing(tracer)
            enable_trace_ids(tracing.current_ids)
    return SERVER


def client_traceparent(value: str | None) -> str | None:
    """The client's `traceparent` as stored (version 00), or None when missing or invalid: the spec says a
    receiver ignores an invalid one and starts a new trace (docs/operations.md, Tracing)."""
    parsed = tracecontext.parse(value) if value else None
    return parsed.header() if parsed is not None else None
