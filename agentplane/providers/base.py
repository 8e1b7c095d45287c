"""What every model provider adapter shares: the prompt of a task type, the handler that runs it, and how a
provider's failure becomes a task failure (retryable or not, with the provider's own message)."""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from agentplane import tracing
from agentplane._sdk_context import HandlerResult, TaskContext, TaskFailed
from agentplane.protocol import Usage

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

# A progress frame per this many streamed pieces at most; the message counts them all.
PROGRESS_EVERY = 8


@dataclass(frozen=True)
class Prompt:
    """A task type's prompt: ``template`` is filled from the payload's fields (``{spec}``, ``{code}``;
    ``{{`` for a literal brace); ``schema``, when given, asks for JSON matching it, and the parsed object
    is the task's output."""

    template: str
    system: str = ""
    schema: dict[str, Any] | None = None
    max_tokens: int = 1024
    temperature: float | None = None

    def render(self, payload: Mapping[str, Any]) -> str:
        try:
            return string.Formatter().vformat(self.template, (), payload)
        except KeyError as exc:
            raise TaskFailed("invalid_payload", f"the payload has no field {exc.args[0]!r}") from exc
        except (IndexError, ValueError, AttributeError, TypeError) as exc:
            message = f"the prompt cannot be filled from the payload: {exc}"
            raise TaskFailed("invalid_payload", message) from exc


@dataclass(frozen=True)
class Request:
    system: str
    user: str
    max_tokens: int
    temperature: float | None
    schema: dict[str, Any] | None


@dataclass
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    stop_reason: str | None = None
    pieces: int = field(default=0)


class Provider(Protocol):
    """One model behind one provider SDK. ``on_piece`` is called for each streamed piece of text (None: the
    provider is asked for the whole answer at once)."""

    model: str

    async def complete(self, request: Request, on_piece: Callable[[str], None] | None) -> Completion: ...


class ModelHandler:
    """A task handler backed by a model: prompt from the payload, the provider's answer as output, the
    provider's token counts as usage, progress while it streams. Cancelling the task (a `cancel` frame)
    cancels the provider call, which closes its HTTP request."""

    def __init__(self, provider: Provider, prompt: Prompt, *, stream: bool = True) -> None:
        self.provider = provider
        self.prompt = prompt
        self.stream = stream
        self._tracer = tracing.tracer("agentplane.providers", "agentplane-agent")  # None: tracing is off

    async def __call__(self, ctx: TaskContext) -> HandlerResult:
        request = Request(
            system=self.prompt.system,
            user=self.prompt.render(ctx.payload),
            max_tokens=self.prompt.max_tokens,
            temperature=self.prompt.temperature,
            schema=self.prompt.schema,
        )
        pieces = 0

        def on_piece(text: str) -> None:
            nonlocal pieces
            pieces += 1
            if pieces == 1 or pieces % PROGRESS_EVERY == 0:
                # Pieces are about a token each; the model's own count comes with the result.
                ctx.progress(min(0.99, pieces / request.max_tokens), f"{pieces} tokens so far")

        if self._tracer is None:
            completion = await self.provider.complete(request, on_piece if self.stream else None)
        else:
            completion = await _traced_call(
                self._tracer, self.provider, request, on_piece if self.stream else None
            )
        usage = Usage(input_tokens=completion.input_tokens, output_tokens=completion.output_tokens)
        ctx.report_usage(completion.input_tokens, completion.output_tokens)
        if self.prompt.schema is not None:
            return HandlerResult(output=_json_output(completion.text), usage=usage)
        output = {"text": completion.text, "model": completion.model, "stop_reason": completion.stop_reason}
        return HandlerResult(output=output, usage=usage)


async def _traced_call(
    tracer: Tracer, provider: Provider, request: Request, on_piece: Callable[[str], None] | None
) -> Completion:
    """The provider call as a span named and described by the OpenTelemetry GenAI semantic conventions
    (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/): a child of the handler's span.
    Prompts and answers are not recorded: they may hold what a trace backend should not."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    system = str(getattr(provider, "system", "unknown"))
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": system,
        "gen_ai.system": system,  # the attribute's name before semconv 1.37, still read by many backends
        "gen_ai.request.model": provider.model,
        "gen_ai.request.max_tokens": request.max_tokens,
    }
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    with tracer.start_as_current_span(
        f"chat {provider.model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        try:
            completion = await provider.complete(request, on_piece)
        except TaskFailed as exc:
            span.set_attribute("error.type", exc.code)
            span.set_status(Status(StatusCode.ERROR, exc.message[:200]))
            raise
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
            raise
        span.set_attribute("gen_ai.response.model", completion.model)
        span.set_attribute("gen_ai.usage.input_tokens", completion.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", completion.output_tokens)
        if completion.stop_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [completion.stop_reason])
        return completion


def _json_output(text: str) -> Any:
    body = text.strip()
    if body.startswith("```"):  # a fenced block, as models often answer despite being asked not to
        body = body.strip("`").removeprefix("json").strip()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # Another sample may well parse: retryable.
        raise TaskFailed("invalid_output", f"the model's answer is not JSON: {exc}", retryable=True) from exc


def schema_instruction(schema: dict[str, Any]) -> str:
    return (
        "Answer with one JSON object and nothing else, matching this JSON schema:\n"
        + orjson.dumps(schema).decode()
    )


# ------------------------------------------------------------------ errors

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


# An error event in the middle of a stream comes with the stream's 200: its type says what it was.
_ERROR_TYPE_STATUS = {
    "rate_limit_error": 429,
    "overloaded_error": 529,
    "api_error": 500,
    "timeout_error": 504,
}


def sdk_failure(exc: Exception, sdk: Any) -> TaskFailed | None:
    """The task failure for an error of a provider SDK, or None when it is not one of its API errors. The
    openai and anthropic SDKs share their error classes' names and shapes (both are generated by Stainless),
    so ``sdk`` is either module."""
    if isinstance(exc, sdk.APIStatusError):
        retry_after = exc.response.headers.get("retry-after")
        return status_failure(exc.status_code, provider_message(exc.body, exc.message), retry_after, exc.body)
    if isinstance(exc, sdk.APITimeoutError):
        return TaskFailed("provider_timeout", f"the provider did not answer in time: {exc}", True)
    if isinstance(exc, sdk.APIConnectionError):
        return TaskFailed("provider_unreachable", f"cannot reach the provider: {exc}", True)
    return None


def status_failure(status: int, message: str, retry_after: str | None, body: object = None) -> TaskFailed:
    """A provider's HTTP error as a task failure: rate limits, overload, timeouts and 5xx are worth another
    attempt; a bad request or a bad key is not (the same request would fail the same way)."""
    if status < 400 and isinstance(body, dict) and isinstance(body.get("error"), dict):
        status = _ERROR_TYPE_STATUS.get(str(body["error"].get("type")), 500)
    if status == 429:
        hint = f" (retry after {retry_after} s)" if retry_after else ""
        return TaskFailed("provider_rate_limited", f"{message}{hint}", retryable=True)
    if status == 529:
        return TaskFailed("provider_overloaded", message, retryable=True)
    if status in (401, 403):
        return TaskFailed("provider_auth", message, retryable=False)
    if status == 400 or status == 422:
        return TaskFailed("provider_bad_request", message, retryable=False)
    if status in RETRYABLE_STATUS or status >= 500:
        return TaskFailed("provider_unavailable", f"HTTP {status}: {message}", retryable=True)
    return TaskFailed("provider_rejected", f"HTTP {status}: {message}", retryable=False)


def provider_message(body: object, fallback: str) -> str:
    """The provider's own words: both APIs answer ``{"error": {"message": ...}}``."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return fallback
