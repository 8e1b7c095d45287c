"""A stand-in for the model providers: a local HTTP server speaking OpenAI's chat-completions and Anthropic's
Messages wire formats (JSON and server-sent events, usage blocks, the providers' error bodies), so that the
adapters are driven through the real provider SDKs without reaching a provider.

What it answers is chosen by the prompt: a user message containing ``scenario:NAME`` gets scenario NAME
(below); anything else gets a normal answer. Every request is recorded, with whether its client went away
before the answer was complete (``aborted``).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

ANSWER_WORDS = ["def", " add", "(a,", " b):", " return", " a", " +", " b"]
INPUT_TOKENS = 42  # what the stand-in says every prompt cost
SLOW_PIECES = 400  # the slow scenario's length: long enough to be cancelled midway
_SCENARIO = re.compile(r"scenario:([a-z0-9_-]+)")


@dataclass
class Seen:
    api: str  # "openai" or "anthropic"
    scenario: str
    body: dict[str, Any]
    auth: str
    pieces_sent: int = 0
    completed: bool = False
    aborted: bool = False


class ProviderStandIn:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
            ]
        )
        self.app = app

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProviderStandIn:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the provider stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def seen(self, scenario: str) -> list[Seen]:
        return [request for request in self.requests if request.scenario == scenario]

    # ------------------------------------------------------------------ common

    async def _read(self, request: Request, api: str) -> tuple[Seen, dict[str, Any]]:
        body = await request.json()
        text = json.dumps(body.get("messages", []))
        match = _SCENARIO.search(text)
        auth = request.headers.get("authorization", "") or request.headers.get("x-api-key", "")
        seen = Seen(api=api, scenario=match.group(1) if match else "ok", body=body, auth=auth)
        self.requests.append(seen)
        return seen, body

    def _error(self, seen: Seen, api: str) -> Response | None:
        """The error scenarios, in each provider's own error body."""
        errors: dict[str, tuple[int, str, str, dict[str, str]]] = {
            "ratelimited": (429, "rate_limit_error", "Rate limit reached for requests", {"retry-after": "7"}),
            "overloaded": (529, "overloaded_error", "Overloaded", {}),
            "servererror": (500, "api_error", "The server had an error", {}),
            "badrequest": (400, "invalid_request_error", "max_tokens: must be at most 4096", {}),
            "unauthorized": (401, "authentication_error", "Incorrect API key provided", {}),
        }
        if seen.scenario == "ratelimitedonce":
            if len(self.seen("ratelimitedonce")) == 1:
                seen.completed = True
                return self._error_response(api, 429, "rate_limit_error", "slow down", {"retry-after": "0"})
            return None
        if seen.scenario not in errors:
            return None
        seen.completed = True
        status, kind, message, headers = errors[seen.scenario]
        return self._error_response(api, status, kind, message, headers)

    @staticmethod
    def _error_response(api: str, status: int, kind: str, message: str, headers: dict[str, str]) -> Response:
        if api == "anthropic":
            body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return JSONResponse(body, status_code=status, headers=headers)

    async def _pieces(self, seen: Seen) -> AsyncIterator[str]:
        """The answer's pieces; a scenario may make them slow, endless-looking or cut."""
        if seen.scenario == "timeout":
            await asyncio.sleep(30)
        count = SLOW_PIECES if seen.scenario == "slow" else len(ANSWER_WORDS)
        for n in range(count):
            if seen.scenario == "slow":
                await asyncio.sleep(0.02)
            if seen.scenario == "cut" and n == 3:
                raise ConnectionResetError("the stand-in cuts the stream midway")
            seen.pieces_sent += 1
            yield ANSWER_WORDS[n % len(ANSWER_WORDS)]

    async def _tracked(self, seen: Seen, events: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
            seen.completed = True
        except (asyncio.CancelledError, GeneratorExit):
            seen.aborted = True  # the client closed the response before it was complete
            raise

    # ------------------------------------------------------------------ OpenAI chat completions

    async def _openai(self, request: Request) -> Response:
        seen, body = await self._read(request, "openai")
        if (error := self._error(seen, "openai")) is not None:
            return error
        model = body["model"]
        if not body.get("stream"):
            text = "".join([piece async for piece in self._pieces(seen)])
            seen.completed = True
            return JSONResponse(
                {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self._content(body, text)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": self._openai_usage(seen),
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._tracked(seen, self._openai_events(seen, body, include_usage)),
            media_type="text/event-stream",
        )

    async def _openai_events(
        self, seen: Seen, body: dict[str, Any], include_usage: bool
    ) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
            data = {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        if body.get("response_format"):
            yield chunk({"content": self._content(body, "")})
        else:
            async for piece in self._pieces(seen):
                yield chunk({"content": piece})
        yield chunk({}, "stop")
        if include_usage:
            yield chunk({}, None, usage=self._openai_usage(seen))
        yield "data: [DONE]\n\n"

    @staticmethod
    def _openai_usage(seen: Seen) -> dict[str, int]:
        output = max(1, seen.pieces_sent)
        return {
            "prompt_tokens": INPUT_TOKENS,
            "completion_tokens": output,
            "total_tokens": INPUT_TOKENS + output,
        }

    @staticmethod
    def _content(body: dict[str, Any], text: str) -> str:
        """With a JSON schema asked for (either way), the answer is a JSON object with its properties."""
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        if schema is None and "JSON schema" in str(body.get("system", "")):
            schema = json.loads(str(body["system"]).rsplit("\n", 1)[-1])
        if schema is None:
            return text
        return json.dumps({name: f"<{name}>" for name in schema.get("properties", {})})

    # ------------------------------------------------------------------ Anthropic messages

    async def _anthropic(self, request: Request) -> Response:
        seen, body = await self._read(request, "anthropic")
        if (error := self._error(seen, "anthropic")) is not None:
            return error
        if not body.get("stream"):
            text = "".join([piece async for piece in self._pieces(seen)])
            seen.completed = True
            return JSONResponse(
                {
                    "id": "msg_standin",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": self._content(body, text)}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": max(1, seen.pieces_sent)},
                }
            )
        return StreamingResponse(
            self._tracked(seen, self._anthropic_events(seen, body)), media_type="text/event-stream"
        )

    async def _anthropic_events(self, seen: Seen, body: dict[str, Any]) -> AsyncIterator[str]:
        def event(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        message = {
            "id": "msg_standin",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1},
        }
        yield event("message_start", {"message": message})
        yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        if "JSON schema" in str(body.get("system", "")):
            yield event(
                "content_block_delta",
                {"index": 0, "delta": {"type": "text_delta", "text": self._content(body, "")}},
            )
        else:
            async for piece in self._pieces(seen):
                yield event(
                    "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}
                )
        yield event("content_block_stop", {"index": 0})
        usage = {"output_tokens": max(1, seen.pieces_sent)}
        yield event(
            "message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage}
        )
        yield event("message_stop", {})
