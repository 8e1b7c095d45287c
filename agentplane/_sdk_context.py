"""What a handler sees (TaskContext) and how its outcome becomes a `result` frame."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import PydanticSerializationError

from agentplane.protocol import (
    Assign,
    Progress,
    Result,
    ResultError,
    Usage,
    invalid_result,
    result_problem,
)

Handler = Callable[["TaskContext"], Any]
"""A sync or async callable taking a TaskContext and returning the output (or a HandlerResult)."""


class TaskFailed(Exception):
    """Raise from a handler to fail the task with your own error code; `retryable` invites a retry."""

    def __init__(self, code: str, message: str = "", retryable: bool = False) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class HandlerResult:
    """A handler's output with its usage; `usage`, when given, replaces what report_usage accumulated."""

    output: Any = None
    usage: Usage | None = None


class _Sent:
    """Awaiting it does nothing: progress is queued at once, so `ctx.progress(...)` works with or without
    `await`, from the event loop or from a sync handler's thread."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_SENT = _Sent()


class TaskContext:
    """One assignment as its handler sees it."""

    def __init__(self, assign: Assign, emit: Callable[[Progress], None]) -> None:
        self.assignment_id: uuid.UUID = assign.assignment_id
        self.task_id: uuid.UUID = assign.task_id
        self.task_type: str = assign.task_type
        self.payload: dict[str, Any] = assign.payload
        self.attempt: int = assign.attempt
        self.timeout: float = assign.timeout
        self.deadline: datetime = assign.deadline
        # The task's W3C trace context, as the server sent it (None: the task has none). The SDK's handler
        # span continues it when tracing is on; a handler may pass it on to services it calls.
        self.traceparent: str | None = assign.traceparent
        self.cancel_reason: str = ""
        self._emit = emit
        # A plain flag that sync handlers poll from a worker thread: assigning an attribute is atomic in
        # CPython, and a threading.Event (a Condition and two locks) was a tenth of an agent's CPU per task.
        self._cancelled = False
        self._usage_lock = threading.Lock()
        self._usage = Usage()
        self._loop: asyncio.AbstractEventLoop | None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop (tests): progress is emitted synchronously
            self._loop = None
        self._loop_thread = threading.get_ident()

    @property
    def cancelled(self) -> bool:
        """True once the server cancelled this assignment; its output will be discarded."""
        return self._cancelled

    def progress(self, fraction: float, message: str = "") -> Awaitable[None]:
        """Report progress (0.0-1.0, clamped). Safe from any thread; `await` it or not, as you like."""
        if self.cancelled:
            return _SENT
        frame = Progress(
            assignment_id=self.assignment_id,
            progress=min(1.0, max(0.0, float(fraction))),
            message=message[:2000],
        )
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._emit(frame)
        else:
            self._loop.call_soon_threadsafe(self._emit, frame)
        return _SENT

    def report_usage(self, input_tokens: int = 0, output_tokens: int = 0, cost: float | None = None) -> None:
        """Add tokens (and cost, if known) to what this task has used; sent with the result."""
        with self._usage_lock:
            old = self._usage
            total_cost = old.cost if cost is None else (old.cost or 0.0) + cost
            self._usage = Usage(
                input_tokens=old.input_tokens + input_tokens,
                output_tokens=old.output_tokens + output_tokens,
                cost=total_cost,
            )

    @property
    def usage(self) -> Usage:
        with self._usage_lock:
            return self._usage

    def _cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self._cancelled = True


def is_async_handler(handler: Handler) -> bool:
    # An instance whose class has an async __call__ counts as async too.
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__)


async def run_handler(handler: Handler, ctx: TaskContext) -> Result | None:
    """Run one handler to its `result` frame; None when the server cancelled it (no result is sent then)."""
    try:
        if is_async_handler(handler):
            value = await handler(ctx)
        else:
            value = await asyncio.to_thread(handler, ctx)
        if inspect.isawaitable(value):  # a sync callable that returned a coroutine
            value = await value
    except asyncio.CancelledError:
        if ctx.cancelled:
            return None
        raise
    except TaskFailed as exc:
        error = ResultError(code=exc.code[:100], message=exc.message[:10_000], retryable=exc.retryable)
        return Result(assignment_id=ctx.assignment_id, status="failed", error=error, usage=ctx.usage)
    except Exception as exc:
        error = ResultError(code="handler_error", message=repr(exc)[:10_000], retryable=False)
        return Result(assignment_id=ctx.assignment_id, status="failed", error=error, usage=ctx.usage)
    if ctx.cancelled:
        return None
    usage = ctx.usage
    if isinstance(value, HandlerResult):
        value, usage = value.output, value.usage or usage
    return Result(assignment_id=ctx.assignment_id, status="succeeded", output=value, usage=usage)


def encode_result(result: Result, max_bytes: int) -> str:
    """The result as frame text; an output that cannot be sent becomes a failed result instead, because a
    frame the server refuses would never be acknowledged and would be resent forever."""
    problem = result_problem(result)
    if problem is not None:  # the server would refuse to store it (NUL, a 64-bit overflow, too deep)
        return invalid_result(result, problem).dump().decode()
    try:
        raw = result.dump()
    except (TypeError, ValueError, PydanticSerializationError) as exc:
        return _failed(result, "invalid_output", f"the handler's output is not JSON-serialisable: {exc!r}")
    if len(raw) > max_bytes:
        return _failed(result, "output_too_large", f"the result frame exceeds {max_bytes} bytes")
    return raw.decode()


def _failed(result: Result, code: str, message: str) -> str:
    error = ResultError(code=code, message=message[:10_000], retryable=False)
    frame = Result(assignment_id=result.assignment_id, status="failed", error=error, usage=result.usage)
    return frame.dump().decode()
