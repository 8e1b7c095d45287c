"""The shape of every long-lived service the lifespan owns: start() spawns run(), stop() cancels it."""

from __future__ import annotations

import abc
import asyncio
import contextlib


class BackgroundService(abc.ABC):
    name = "background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @abc.abstractmethod
    async def run(self) -> None:
        """The service's loop; it runs until cancelled."""
