"""A raw protocol client: exactly the frames a test sends, no SDK in between."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class RawAgent:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.agent_id = ""
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        key: str,
        *,
        agent_id: str | None = None,
        model: str = "gpt-4",
        capabilities: list[str] | None = None,
        max_concurrency: int = 4,
        register: bool = True,
        via_query: bool = False,
        max_queue: int = 16,
    ) -> RawAgent:
        """``max_queue``: messages the client library reads ahead of the test (websockets' default, 16); a
        test of a peer that stops reading sets 1, or the library keeps reading for it."""
        options: dict[str, Any] = {"max_size": None, "compression": None, "max_queue": max_queue}
        if via_query:
            ws = await websockets.connect(f"{url}?token={key}", **options)
        else:
            ws = await websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {key}"}, **options
            )
        agent = cls(ws)
        if register:
            frame: dict[str, Any] = {
                "type": "register",
                "model": model,
                "capabilities": [{"name": name} for name in (capabilities or ["echo"])],
                "max_concurrency": max_concurrency,
            }
            if agent_id:
                frame["agent_id"] = agent_id
            await agent.send(frame)
            registered = await agent.expect("registered")
            agent.agent_id = registered["agent_id"]
        return agent

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return dict(json.loads(raw))

    async def expect(self, kind: str, timeout: float = 10.0, *, answer_pings: bool = True) -> dict[str, Any]:
        """The next frame of ``kind``; pings are answered and other frames kept for later."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for index, frame in enumerate(self.backlog):
            if frame["type"] == kind:
                return self.backlog.pop(index)
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - loop.time()))
            frame = dict(json.loads(raw))
            if frame["type"] == kind:
                return frame
            if frame["type"] == "ping" and answer_pings:
                await self.send({"type": "pong", "nonce": frame["nonce"]})
                continue
            self.backlog.append(frame)

    async def complete(self, assign: dict[str, Any], output: Any = None, **usage: Any) -> dict[str, Any]:
        await self.send({"type": "accept", "assignment_id": assign["assignment_id"]})
        await self.send(
            {
                "type": "result",
                "assignment_id": assign["assignment_id"],
                "status": "succeeded",
                "output": output if output is not None else {"done": assign["task_id"]},
                "usage": usage or {"input_tokens": 1, "output_tokens": 1},
            }
        )
        return await self.expect("ack")

    async def fail(self, assign: dict[str, Any], error: dict[str, Any]) -> None:
        await self.send(
            {"type": "result", "assignment_id": assign["assignment_id"], "status": "failed", "error": error}
        )

    async def closed_with(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the socket; returns its close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None

    async def close(self) -> None:
        await self.ws.close()
