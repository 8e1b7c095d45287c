"""The frame rate limit per agent connection: other frames beyond it are refused with `rate_limited`,
answers (results) are slowed, never dropped, and a peer that keeps flooding is closed with 4002."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.support.polling import eventually_async
from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent

SERVER_ENV = {
    "AGENTPLANE_WS_FRAME_RATE": "20",
    "AGENTPLANE_WS_FRAME_BURST": "20",
    "AGENT_HEALTH_CHECK_INTERVAL": "60s",
}


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="rate-agents")


async def test_frames_past_the_limit_get_rate_limited_and_the_socket_stays(
    server: ServerProcess, agent_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key)
    try:
        for _ in range(60):
            await agent.send({"type": "heartbeat", "active": 0})
        error = await agent.expect("error")
        assert (error["code"], error["ref"]) == ("rate_limited", "heartbeat")
        await asyncio.sleep(1.5)  # tokens come back
        await agent.send({"type": "heartbeat", "active": -1})  # answered: the socket is still served
        assert (await agent.expect("error"))["code"] in {"invalid_message", "rate_limited"}
    finally:
        await agent.close()


async def test_results_past_the_limit_are_slowed_not_dropped(server: ServerProcess, agent_key: str) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["rated"], max_concurrency=60)
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=10) as client:
            batch = [{"type": "rated", "capabilities": ["rated"], "payload": {}}] * 60
            tasks = (await client.post("/api/v1/tasks:batch", json={"tasks": batch})).json()["tasks"]
            assigns = [await agent.expect("assign") for _ in tasks]
            for assign in assigns:  # three times the burst, at once
                await agent.send(
                    json.dumps(
                        {"type": "result", "assignment_id": assign["assignment_id"], "status": "succeeded"}
                    )
                )
            acked = {(await agent.expect("ack", timeout=15))["assignment_id"] for _ in assigns}
            assert acked == {assign["assignment_id"] for assign in assigns}
            assert not [f for f in agent.backlog if f["type"] == "error"]

            async def all_succeeded() -> bool:
                page = (await client.get("/api/v1/tasks", params={"type": "rated", "limit": 100})).json()
                return all(item["status"] == "succeeded" for item in page["items"])

            await eventually_async(all_succeeded)
    finally:
        await agent.close()


async def test_a_peer_that_keeps_flooding_is_closed_4002(server: ServerProcess, agent_key: str) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key)
    frame = json.dumps({"type": "heartbeat"})
    try:
        for _ in range(1200):
            await agent.send(frame)
    except Exception:
        pass  # the server may close before the flood ends
    assert await agent.closed_with(timeout=10) == 4002
