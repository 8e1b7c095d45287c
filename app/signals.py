"""In-process wake-ups: work became available, a task changed. Local code and the LISTEN bus both call in.

Nothing here is durable: a missed signal only delays a waiter until its next poll, so it never loses work.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict


class Signals:
    def __init__(self) -> None:
        self.work = asyncio.Event()  # pending tasks or free capacity: the dispatcher should look
        self.work_seq = 0  # counts work_available(): the dispatcher tells new work from freed capacity
        self.join_seq = 0  # counts agent_joined(): worth a claim, but a burst of joins needs only one
        self.sessions = asyncio.Event()  # a task ended: a collaboration session may have a step to take
        self.joined = asyncio.Event()  # newcomers is not empty: the health monitor checks them at once
        self.newcomers: set[str] = set()
        self._task_waiters: dict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)

    def work_available(self) -> None:
        """Tasks may have become claimable: submitted, requeued, cancelled elsewhere, notified."""
        self.work_seq += 1
        self.work.set()

    def agent_joined(self, agent_id: str | None = None) -> None:
        """An agent connected: tasks only it can take may be waiting. A reconnect storm of thousands of agents
        must not cost a claim each, so the dispatcher answers joins at most every JOIN_DEBOUNCE seconds.
        ``agent_id``: a socket to health-check now rather than up to an interval later."""
        self.join_seq += 1
        self.work.set()
        if agent_id is not None:
            self.newcomers.add(agent_id)
            self.joined.set()

    def take_newcomers(self) -> set[str]:
        newcomers, self.newcomers = self.newcomers, set()
        self.joined.clear()
        return newcomers

    def capacity_freed(self) -> None:
        """An agent has room again: worth a claim only if work is known to be waiting."""
        self.work.set()

    def task_changed(self, task_id: uuid.UUID) -> None:
        for event in self._task_waiters.get(task_id, ()):
            event.set()

    async def wait_task(self, task_id: uuid.UUID, seconds: float) -> None:
        """Return when ``task_id`` changes or after ``seconds``, whichever is first."""
        event = asyncio.Event()
        self._task_waiters[task_id].add(event)
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            waiters = self._task_waiters.get(task_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._task_waiters[task_id]
