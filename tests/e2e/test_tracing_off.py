"""Tracing off (no OTEL_* setting, the default): the server creates no spans, but the W3C trace context
still goes end to end. A client's `traceparent` is stored as it came (normalised to version 00), its trace
id is returned on the task, and the `assign` frame carries it to the agent unchanged, so an agent that
traces continues the client's trace. A task without one has no trace context, and its frame no field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentplane.sdk import Agent, TaskContext
from tests.support.polling import eventually_async
from tests.support.server import ServerProcess

CLIENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
async def agent(server: ServerProcess) -> AsyncIterator[Agent]:
    worker = Agent(server.ws_url, server.create_key("agent"), "demo-1", ["echo"], agent_id="untraced")

    @worker.handler("echo")
    def echo(ctx: TaskContext) -> dict[str, Any]:
        return {"traceparent": ctx.traceparent}

    run = asyncio.create_task(worker.run())
    try:
        await eventually_async(lambda: _connected(worker), timeout=30)
        yield worker
    finally:
        await worker.stop()
        await asyncio.gather(run, return_exceptions=True)


async def _connected(agent: Agent) -> bool:
    return agent._link is not None


async def _run(server: ServerProcess, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    async with server.async_client() as client:
        body = {"type": "echo", "capabilities": ["echo"], **fields}
        response = await client.post("/api/v1/tasks", json=body, headers=headers)
        assert response.status_code == 201, response.text
        task = (await client.get(f"/api/v1/tasks/{response.json()['id']}", params={"wait": 30})).json()
    assert task["status"] == "succeeded", task
    assert task["trace_id"] == response.json()["trace_id"]
    return task


async def test_the_clients_traceparent_reaches_the_agent_unchanged(
    server: ServerProcess, agent: Agent
) -> None:
    task = await _run(server, {"traceparent": CLIENT})
    assert task["trace_id"] == CLIENT[3:35]
    assert task["result"] == {"traceparent": CLIENT}


async def test_without_a_traceparent_there_is_no_trace_context(server: ServerProcess, agent: Agent) -> None:
    task = await _run(server, {})
    assert task["trace_id"] is None
    assert task["result"] == {"traceparent": None}


async def test_an_invalid_header_is_ignored(server: ServerProcess, agent: Agent) -> None:
    task = await _run(server, {"traceparent": CLIENT.upper()})  # uppercase hex is not W3C
    assert task["trace_id"] is None
    assert task["result"] == {"traceparent": None}


async def test_the_bodys_traceparent_wins_and_is_stored_as_version_00(
    server: ServerProcess, agent: Agent
) -> None:
    later = "01-" + CLIENT[3:] + "-more-fields"
    task = await _run(server, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, traceparent=later)
    assert task["result"] == {"traceparent": CLIENT}
