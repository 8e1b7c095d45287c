"""Placement at submit: with a local agent free and nothing waiting, a single submit is inserted leased, in
one statement, and its `assign` leaves at once; with older work waiting, a new task queues behind it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent

SERVER_ENV = {"AGENT_HEALTH_CHECK_INTERVAL": "30s"}


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> tuple[str, str]:
    return server.create_key("agent", name="placed-agent"), server.create_key("client", name="placer")


async def submit(client: httpx.AsyncClient, capability: str, **extra: Any) -> dict[str, Any]:
    body = {"type": "work", "capabilities": [capability], **extra}
    response = await client.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_submit_with_a_free_local_agent_is_leased_in_the_same_statement(
    server: ServerProcess, keys: tuple[str, str]
) -> None:
    agent_key, client_key = keys
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["placed"], max_concurrency=2)
    try:
        async with server.async_client(client_key) as client:
            # The dispatcher's first round after the agent joined finds the queue empty; placement needs that.
            for _ in range(50):
                task = await submit(client, "placed")
                if task["status"] == "assigned":
                    break
                await agent.complete(await agent.expect("assign"))
            assert task["status"] == "assigned"  # the response itself: leased before it was written
            assert task["agent_id"] == agent.agent_id
            assert task["attempt"] == 1
            assert task["assignment_id"] is not None
            assign = await agent.expect("assign")
            assert (assign["task_id"], assign["assignment_id"]) == (task["id"], task["assignment_id"])
            await agent.complete(assign, output={"ok": True})
            done = (await client.get(f"/api/v1/tasks/{task['id']}", params={"wait": 10})).json()
            assert done["status"] == "succeeded"
            assert done["result"] == {"ok": True}
            events = (await client.get(f"/api/v1/tasks/{task['id']}/events")).text
            transitions = [line for line in events.splitlines() if line.startswith("data:")]
            assert ['"to":"pending"' in line for line in transitions[:2]] == [True, False]
            assert '"to":"assigned"' in transitions[1]
            assignments = (await client.get(f"/api/v1/tasks/{task['id']}/assignments")).json()["items"]
            assert [(a["agent_id"], a["status"]) for a in assignments] == [(agent.agent_id, "succeeded")]
    finally:
        await agent.close()


async def test_new_work_queues_behind_older_waiting_work(
    server: ServerProcess, keys: tuple[str, str]
) -> None:
    agent_key, client_key = keys
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["fair"], max_concurrency=1)
    try:
        async with server.async_client(client_key) as client:
            first = await submit(client, "fair")
            held = await agent.expect("assign")  # the agent's one slot is taken
            assert held["task_id"] == first["id"]
            older = await submit(client, "fair", priority=5)
            assert older["status"] == "pending"  # no room: it waits
            newer = await submit(client, "fair")
            assert newer["status"] == "pending"  # older work waits: the newcomer does not jump it
            await agent.complete(held)
            assign = await agent.expect("assign")
            assert assign["task_id"] == older["id"]
            await agent.complete(assign)
            assign = await agent.expect("assign")
            assert assign["task_id"] == newer["id"]
            await agent.complete(assign)
    finally:
        await agent.close()
