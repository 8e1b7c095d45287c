"""Claude through Anthropic's Messages API and the official `anthropic` SDK (pip install
'agentplane[anthropic]'). Claude on Bedrock or Vertex: pass the SDK's ``AsyncAnthropicBedrock`` or
``AsyncAnthropicVertex`` client as ``client``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic

from agentplane.providers.base import Completion, Request, schema_instruction, sdk_failure
from agentplane.sdk import TaskFailed


class AnthropicMessages:
    system = "anthropic"  # gen_ai.provider.name in the call's span

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        client: anthropic.AsyncAnthropic | Any | None = None,
    ) -> None:
        """``max_retries``: the SDK's own retries of rate limits, overload and timeouts, which honour the
        provider's Retry-After; past them the task fails as retryable and Agentplane retries it."""
        self.model = model
        self.client = client or anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    async def complete(self, request: Request, on_piece: Callable[[str], None] | None) -> Completion:
        system = request.system
        if request.schema is not None:  # asked in words: the Messages API has no response format to set
            system = f"{system}\n\n{schema_instruction(request.schema)}".strip()
        options: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": "user", "content": request.user}],
        }
        if system:
            options["system"] = system
        if request.temperature is not None:
            options["temperature"] = request.temperature
        try:
            if on_piece is None:
                message = await self.client.messages.create(**options)
                return Completion(
                    text="".join(block.text for block in message.content if block.type == "text"),
                    input_tokens=message.usage.input_tokens,
                    output_tokens=message.usage.output_tokens,
                    model=message.model or self.model,
                    stop_reason=message.stop_reason,
                )
            return await self._stream(options, on_piece)
        except anthropic.APIError as exc:
            failure = sdk_failure(exc, anthropic)
            if failure is None:
                raise
            raise failure from exc

    async def _stream(self, options: dict[str, Any], on_piece: Callable[[str], None]) -> Completion:
        stream = await self.client.messages.create(**options, stream=True)
        completion = Completion(text="", input_tokens=0, output_tokens=0, model=self.model)
        parts: list[str] = []
        finished = False
        try:
            async for event in stream:
                if event.type == "message_start":
                    completion.model = event.message.model or completion.model
                    completion.input_tokens = event.message.usage.input_tokens
                    completion.output_tokens = event.message.usage.output_tokens
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    parts.append(event.delta.text)
                    on_piece(event.delta.text)
                elif event.type == "message_delta":
                    completion.stop_reason = event.delta.stop_reason
                    completion.output_tokens = event.usage.output_tokens  # cumulative
                elif event.type == "message_stop":
                    finished = True
        except (anthropic.APIStatusError, anthropic.APITimeoutError):
            raise  # an `error` event mid-stream (overloaded) arrives as a status error
        except Exception as exc:  # the body stopped midway: the SDK surfaces its HTTP library's error
            raise TaskFailed(
                "provider_stream_interrupted", f"the answer stopped after {len(parts)} pieces: {exc!r}", True
            ) from exc
        finally:
            await stream.close()  # on cancel too: closing the response aborts the provider's generation
        if not finished:
            message = f"the answer ended without finishing ({len(parts)} pieces)"
            raise TaskFailed("provider_stream_interrupted", message, retryable=True)
        completion.text = "".join(parts)
        return completion
