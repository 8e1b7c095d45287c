"""A raw agent that keeps answering pings in the background (as a hung agent's link layer would) while the
test decides what, if anything, it does with its assigns."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class ListeningAgent:
    def __init__(self, ws: ClientConnection, agent_id: str) -> None:
        self.ws = ws
        self.agent_id = agent_id
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pings = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, key: str, **register: Any) -> ListeningAgent:
        """Register with ``register``'s fields (model, capabilities as names or dicts, task_types, ...)."""
        ws = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"})
        frame: dict[str, Any] = {"type": "register", "model": "gpt-4", "max_concurrency": 4, **register}
        frame["capabilities"] = [
            {"name": cap} if isinstance(cap, str) else cap for cap in register.get("capabilities", ["echo"])
        ]
        await ws.send(json.dumps(frame))
        registered = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert registered["type"] == "registered", registered
        return cls(ws, registered["agent_id"])

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame["type"] == "ping":
                    self.pings += 1
                    await self.ws.send(json.dumps({"type": "pong", "nonce": frame["nonce"]}))
                else:
                    await self.frames.put(frame)

    async def next(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame of ``kind`` (others are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if frame["type"] == kind:
                    return frame

    async def none_of(self, kind: str, seconds: float) -> None:
        """No frame of ``kind`` arrives within ``seconds`` (a negative check: used only after the positive
        one for the same setup has passed, so it cannot pass by being too short on a slow machine alone)."""
        with contextlib.suppress(TimeoutError):
            frame = await self.next(kind, seconds)
            raise AssertionError(f"unexpected {kind}: {frame}")

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
