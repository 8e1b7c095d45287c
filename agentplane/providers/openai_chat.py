"""Models behind OpenAI's chat-completions API, through the official `openai` SDK (pip install
'agentplane[openai]'): OpenAI itself, and every server that speaks the same API through ``base_url``
(vLLM, Ollama, llama.cpp's server, LM Studio, ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from agentplane.providers.base import Completion, Request, sdk_failure
from agentplane.sdk import TaskFailed


class OpenAIChat:
    system = "openai"  # gen_ai.provider.name in the call's span (OpenAI-compatible servers speak this API)

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        """``max_retries``: the SDK's own retries of rate limits, overload and timeouts, which honour the
        provider's Retry-After; past them the task fails as retryable and Agentplane retries it."""
        self.model = model
        # Local servers take any key; the SDK insists on one.
        key = api_key if api_key is not None else ("not-needed" if base_url else None)
        self.client = client or openai.AsyncOpenAI(
            api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    async def complete(self, request: Request, on_piece: Callable[[str], None] | None) -> Completion:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.user})
        options: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.schema is not None:
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.schema},
            }
        try:
            if on_piece is None:
                response = await self.client.chat.completions.create(**options)
                choice = response.choices[0] if response.choices else None
                usage = response.usage
                return Completion(
                    text=(choice.message.content or "") if choice else "",
                    input_tokens=usage.prompt_tokens if usage else 0,
                    output_tokens=usage.completion_tokens if usage else 0,
                    model=response.model or self.model,
                    stop_reason=choice.finish_reason if choice else None,
                )
            return await self._stream(options, on_piece)
        except openai.APIError as exc:
            failure = sdk_failure(exc, openai)
            if failure is None:
                raise
            raise failure from exc

    async def _stream(self, options: dict[str, Any], on_piece: Callable[[str], None]) -> Completion:
        stream = await self.client.chat.completions.create(
            **options, stream=True, stream_options={"include_usage": True}
        )
        completion = Completion(text="", input_tokens=0, output_tokens=0, model=self.model)
        parts: list[str] = []
        try:
            async for chunk in stream:
                completion.model = chunk.model or completion.model
                if chunk.usage is not None:
                    completion.input_tokens = chunk.usage.prompt_tokens
                    completion.output_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        on_piece(choice.delta.content)
                    if choice.finish_reason:
                        completion.stop_reason = choice.finish_reason
        except (openai.APIStatusError, openai.APITimeoutError):
            raise
        except Exception as exc:  # the body stopped midway: the SDK surfaces its HTTP library's error
            raise TaskFailed(
                "provider_stream_interrupted", f"the answer stopped after {len(parts)} pieces: {exc!r}", True
            ) from exc
        finally:
            await stream.close()  # on cancel too: closing the response aborts the provider's generation
        if completion.stop_reason is None:
            message = f"the answer ended without finishing ({len(parts)} pieces)"
            raise TaskFailed("provider_stream_interrupted", message, retryable=True)
        completion.text = "".join(parts)
        return completion
