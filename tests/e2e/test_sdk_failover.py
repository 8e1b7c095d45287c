"""The SDK across lost sockets and lost servers, against real server processes: a handler running while its
socket is cut keeps running and its result is delivered; an agent given two URLs moves to the second server
when the first is killed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentplane.sdk import Agent, TaskContext
from tests.support.polling import eventually_async
from tests.support.server import ServerProcess
from tests.support.tcpproxy import TcpProxy

WAIT = 30.0


@dataclass
class Runs:
    """What the agent side saw: every execution of the handler, and how each ended."""

    started: list[uuid.UUID] = field(default_factory=list)
    finished: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def held_agent(urls: str | list[str], key: str, agent_id: str, runs: Runs) -> Agent:
    agent = Agent(urls, key, "gpt-4", agent_id=agent_id, accept_after=0.0)

    @agent.handler("held")
    async def held(ctx: TaskContext) -> dict[str, str]:
        runs.started.append(ctx.assignment_id)
        try:
            await runs.release.wait()
        except asyncio.CancelledError:
            runs.cancelled.append(ctx.assignment_id)
            raise
        runs.finished.append(ctx.assignment_id)
        return {"assignment": str(ctx.assignment_id)}

    return agent


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[None]:
    task = asyncio.create_task(agent.run())
    try:
        yield
    finally:
        await asyncio.wait_for(agent.stop(), WAIT)
        await asyncio.wait_for(task, WAIT)


async def submit(server: ServerProcess, **fields: Any) -> str:
    async with server.async_client() as client:
        response = await client.post(
            "/api/v1/tasks", json={"type": "held", "capabilities": ["held"], "payload": {}, **fields}
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def finished(server: ServerProcess, task_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        task = await server.task(task_id)
        return task if task["status"] in {"succeeded", "failed", "cancelled", "timed_out"} else None

    result = await eventually_async(check, timeout=WAIT)
    assert result is not None
    return result


async def registered_on(server: ServerProcess, agent_id: str) -> None:
    async def check() -> bool:
        async with server.async_client() as client:
            response = await client.get(f"/api/v1/agents/{agent_id}")
        return response.status_code == 200 and response.json()["status"] in {"active", "busy"}

    await eventually_async(check, timeout=WAIT)


@dataclass
class CutRecord:
    runs: Runs
    task: dict[str, Any]
    unacked_left: int
    reconnected: bool


@pytest.fixture(scope="module")
async def socket_cut(server: ServerProcess) -> CutRecord:
    """One task whose handler is running when the agent's socket is cut (through a TCP proxy we drop and
    bring back); the agent reconnects through it, the handler is released, the task ends."""
    key = server.create_key("agent", name="socket-cut")
    proxy = TcpProxy("127.0.0.1", server.port).start()
    runs = Runs()
    agent = held_agent(f"ws://127.0.0.1:{proxy.port}/ws/agents", key, "socket-cut-1", runs)
    try:
        async with running(agent):
            await registered_on(server, "socket-cut-1")
            task_id = await submit(server, max_attempts=3)
            await eventually_async(lambda: _true(runs.started), timeout=WAIT)
            link_before = agent._link
            await asyncio.to_thread(proxy.down)
            await asyncio.to_thread(proxy.up)
            await eventually_async(lambda: _true(agent._link not in (None, link_before)), timeout=WAIT)
            runs.release.set()
            task = await finished(server, task_id)
            await eventually_async(lambda: _true(agent._jobs.idle.is_set()), timeout=WAIT)
            return CutRecord(runs, task, len(agent._jobs.unacked), reconnected=True)
    finally:
        await asyncio.to_thread(proxy.stop)


async def _true(value: object) -> bool:
    return bool(value)


def test_a_cut_socket_does_not_cancel_the_running_handler(socket_cut: CutRecord) -> None:
    first = socket_cut.runs.started[0]
    assert socket_cut.reconnected
    assert socket_cut.runs.cancelled == []
    assert first in socket_cut.runs.finished  # the execution under way when the socket went finished
    assert socket_cut.task["status"] == "succeeded"
    assert socket_cut.unacked_left == 0  # every result sent after the reconnect was acknowledged


def test_a_cut_socket_runs_the_task_exactly_once(socket_cut: CutRecord) -> None:
    first = socket_cut.runs.started[0]
    assert socket_cut.runs.started == [first]
    assert socket_cut.task["attempt"] == 1
    assert socket_cut.task["result"] == {"assignment": str(first)}


async def test_an_agent_with_two_urls_fails_over_when_the_first_server_is_killed(
    server: ServerProcess, database_url: str, tmp_path: Path
) -> None:
    first = ServerProcess(database_url, log_dir=tmp_path).start()
    try:
        key = first.create_key("agent", name="failover")
        runs = Runs()
        runs.release.set()  # these tasks finish at once
        agent = held_agent([first.base_url, server.base_url], key, "failover-1", runs)
        async with running(agent):
            await registered_on(first, "failover-1")
            assert agent.url == first.ws_url
            before = await finished(first, await submit(first))
            assert before["status"] == "succeeded"

            first.kill()
            await eventually_async(lambda: _true(agent.url == server.ws_url and agent._link), timeout=WAIT)
            await registered_on(server, "failover-1")
            after = await finished(server, await submit(server))
            assert after["status"] == "succeeded"
            assert after["agent_id"] == "failover-1"
        assert len(runs.finished) == 2
    finally:
        first.kill()
