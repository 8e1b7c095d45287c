"""An agent that stops reading is closed with 1013 within seconds, and only the assigns written to its socket
cost their tasks an attempt: the rest go back to the queue uncharged."""

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


async def count(client: httpx.AsyncClient, status: str) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, str | int] = {"type": "slow", "status": status, "limit": 500}
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
