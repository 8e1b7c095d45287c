"""An agent that stops reading is closed with 1013 within seconds, and only the assigns written to its socket
cost their tasks an attempt: the rest go back to the queue uncharged. The same holds when such an agent
reconnects (its old socket replaced by the new one) instead of being closed."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.polling import eventually_async
from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent

# One attempt each: a charged task ends failed (agent_lost), an uncharged one is pending again.
SERVER_ENV = {"AGENT_HEALTH_CHECK_INTERVAL": "60s", "AGENT_MAX_ATTEMPTS": "1"}
TASKS = 8000


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="slow-reader")


async def count(client: httpx.AsyncClient, status: str, task_type: str = "slow") -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, str | int] = {"type": task_type, "status": status, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v1/tasks", params=params)).json()
        total += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return total


async def test_an_agent_that_stops_reading_is_closed_and_charged_only_for_what_it_was_sent(
    server: ServerProcess, agent_key: str
) -> None:
    # The raw client reads nothing until the end: its library buffers a few frames, then TCP backs up.
    # Assigns of ~4 KB: the kernel buffers hold a few MB, so most of the 8,000 stay in the server
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["slow"], max_concurrency=10_000)
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as client:
        batch = [{"type": "slow", "capabilities": ["slow"], "payload": {"pad": "x" * 4000}}] * 1000
        for _ in range(TASKS // 1000):
            assert (await client.post("/api/v1/tasks:batch", json={"tasks": batch})).status_code == 201

        async def offline() -> bool:
            response = await client.get(f"/api/v1/agents/{agent.agent_id}")
            return bool(response.json()["status"] == "offline")

        submitted = time.monotonic()
        await eventually_async(offline, timeout=30)
        # Closed within 5 s of the work arriving (the queue fills while the last batches are dispatched).
        assert time.monotonic() - submitted < 5
        # Now read what the server wrote before it gave up: every assign, then its close frame.
        received = 0
        code = None
        while code is None:
            try:
                frame = await agent.recv(timeout=5)
            except TimeoutError:
                break
            except Exception as exc:  # the close frame
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                break
            received += frame["type"] == "assign"
        assert code == 1013
        assert 0 < received < TASKS
        # Written to the socket = charged = failed (one attempt each); the rest are back, uncharged.
        failed, pending = await count(client, "failed"), await count(client, "pending")
        assert failed == received
        assert pending + failed == TASKS


async def read_until_closed(agent: RawAgent) -> tuple[int, int | None]:
    """Read what the server wrote before it gave up on the socket: (assigns, close code)."""
    received, code = 0, None
    while True:
        try:
            frame = await agent.recv(timeout=5)
        except TimeoutError:
            return received, code
        except Exception as exc:  # the close frame
            return received, getattr(getattr(exc, "rcvd", None), "code", None)
        received += frame["type"] == "assign"


async def test_a_reconnect_charges_only_the_assigns_its_old_socket_was_sent(
    server: ServerProcess, agent_key: str
) -> None:
    """The agent stops reading, then reconnects with its agent_id: the old socket is replaced (4009), and
    of its assigns only those written to it are charged (failed, one attempt each); the rest are pending."""
    tasks = 1500
    old = await RawAgent.connect(
        server.ws_url, agent_key, agent_id="reconnects-1", capabilities=["replaced"], max_concurrency=10_000
    )
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as client:
        batch = [{"type": "replaced", "capabilities": ["replaced"], "payload": {"pad": "x" * 8000}}] * 500
        for _ in range(tasks // 500):
            assert (await client.post("/api/v1/tasks:batch", json={"tasks": batch})).status_code == 201

        async def all_leased() -> bool:
            return await count(client, "assigned", "replaced") == tasks

        await eventually_async(all_leased, timeout=30, interval=0.02)
        # ~12 MB of assigns: the kernel holds a few, the rest wait in the server's queue for the old socket.
        new = await RawAgent.connect(  # no capability in common: nothing requeued comes back to it
            server.ws_url, agent_key, agent_id="reconnects-1", capabilities=["elsewhere"]
        )
        try:
            received, code = await read_until_closed(old)
            assert code == 4009
            assert 0 < received < tasks
            failed = await count(client, "failed", "replaced")
            pending = await count(client, "pending", "replaced")
            assert failed == received  # written to the old socket = charged
            assert pending + failed == tasks  # never written = back in the queue, uncharged
        finally:
            await new.close()


async def test_a_reader_that_stalls_before_its_queue_fills_is_closed_within_seconds(
    server: ServerProcess, agent_key: str
) -> None:
    """A few large assigns fill the kernel's buffers but never the 4,096-frame queue: the stalled-writer
    check closes the socket (1013) within seconds, not after the 10 s the revoked-key timer allowed."""
    # The client library reads ahead of the test only one message: a peer that truly stops reading. With its
    # default 16 (8 MB of these frames), 20 MB could fit in its queue and the kernel's buffers, and the
    # server's writer never waited (seen once in a few dozen runs).
    agent = await RawAgent.connect(
        server.ws_url, agent_key, capabilities=["stalls"], max_concurrency=100, max_queue=1
    )
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as client:
        batch = [{"type": "stalls", "capabilities": ["stalls"], "payload": {"pad": "x" * 500_000}}] * 10
        submitted = time.monotonic()
        for _ in range(4):  # 20 MB in bodies under the 8 MiB limit
            assert (await client.post("/api/v1/tasks:batch", json={"tasks": batch})).status_code == 201

        async def offline() -> bool:
            response = await client.get(f"/api/v1/agents/{agent.agent_id}")
            return bool(response.json()["status"] == "offline")

        await eventually_async(offline, timeout=30)
        # The bound is 5 s from the stall; 8 s from the submit covers dispatching 20 MB on a busy
        # machine and recording the disconnect (the old 10 s stall limit alone could not meet it).
        assert time.monotonic() - submitted < 8
        received, code = await read_until_closed(agent)
        assert code == 1013
        failed, pending = await count(client, "failed", "stalls"), await count(client, "pending", "stalls")
        assert failed == received
        assert pending + failed == 40
