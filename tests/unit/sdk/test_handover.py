"""The SDK's side of replicas against the fake server: failover between URLs, and what a reconnecting agent
says it holds (the real server's side is in tests/e2e/test_sdk_failover.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import serve

from agentplane.protocol import Ack, Cancel, Register, Registered, Result
from agentplane.sdk import Agent, TaskContext
from tests.unit.sdk.test_sdk import KEY, FakeServer, assign, running


async def _fake() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    async with serve(fake.handle, "127.0.0.1", 0, compression=None) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}/ws/agents"
        yield fake


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async for fake in _fake():
        yield fake


@pytest.fixture
async def second() -> AsyncIterator[FakeServer]:
    async for fake in _fake():
        yield fake


def gated_agent(urls: list[str], gate: asyncio.Event, runs: list[str]) -> Agent:
    agent = Agent(urls, KEY, "gpt-4", accept_after=30.0, agent_id="held-1")  # no accepts in the way

    @agent.handler("slow")
    async def slow(ctx: TaskContext) -> str:
        runs.append(str(ctx.assignment_id))
        if ctx.payload.get("wait", True):
            await gate.wait()
        return "done"

    return agent


async def test_register_names_its_task_types(server: FakeServer) -> None:
    agent = Agent(server.url, KEY, "gpt-4", capabilities=["code"])
    agent.add_handler("review", lambda ctx: "ok")
    agent.add_handler("code-generation", lambda ctx: "ok")
    async with running(agent):
        register = await (await server.next_connection()).register()
    assert register.task_types == ["code-generation", "review"]
    assert register.holding == []


@pytest.mark.parametrize("code", [1012, 4010, 1013])
async def test_go_elsewhere_close_moves_to_the_next_url(
    server: FakeServer, second: FakeServer, code: int
) -> None:
    agent = Agent([server.url, second.url], KEY, "gpt-4", capabilities=["x"])
    agent.add_handler("x", lambda ctx: None)
    async with running(agent):
        first = await server.next_connection()
        await first.register()
        await first.close(code, "go elsewhere")
        other = await second.next_connection()
        await other.register()
        assert agent.url == second.url
    assert server.accepted == 1


async def test_an_ordinary_drop_retries_the_same_server_first(server: FakeServer, second: FakeServer) -> None:
    agent = Agent([server.url, second.url], KEY, "gpt-4", capabilities=["x"])
    agent.add_handler("x", lambda ctx: None)
    async with running(agent):
        first = await server.next_connection()
        await first.register()
        await first.close(1011, "internal error")
        await (await server.next_connection()).register()
        assert agent.url == server.url
    assert second.accepted == 0


async def test_unreachable_first_url_fails_over(server: FakeServer) -> None:
    dead = "ws://127.0.0.1:9/ws/agents"  # the discard port: nothing listens there
    agent = Agent([dead, server.url], KEY, "gpt-4", capabilities=["x"])
    agent.add_handler("x", lambda ctx: None)
    async with running(agent):
        await (await server.next_connection()).register()
        assert agent.url == server.url


async def test_running_handler_survives_a_drop_and_is_held_on_reconnect(
    server: FakeServer, second: FakeServer
) -> None:
    gate, runs = asyncio.Event(), []
    agent = gated_agent([server.url, second.url], gate, runs)
    async with running(agent):
        first = await server.next_connection()
        await first.register()
        work = assign("slow")
        await first.send(work)
        await first.round_trip()
        await first.close(4010, "replica shutting down")

        other = await second.next_connection()
        register = await other.expect(Register)
        assert register.holding == [work.assignment_id]
        assert register.agent_id == "held-1"
        await other.send(_registered())
        gate.set()  # the handler finishes on the new socket
        result = await other.expect(Result)
        assert result.assignment_id == work.assignment_id
        assert result.output == "done"
        await other.send(Ack(assignment_id=work.assignment_id))
        await other.round_trip()
    assert runs == [str(work.assignment_id)]  # never cancelled, never run twice


async def test_result_finished_while_disconnected_is_held_and_sent_first(
    server: FakeServer, second: FakeServer
) -> None:
    gate, runs = asyncio.Event(), []
    agent = gated_agent([server.url, second.url], gate, runs)
    async with running(agent):
        first = await server.next_connection()
        await first.register()
        work = assign("slow")
        await first.send(work)
        await first.round_trip()
        gate.set()
        result = await first.expect(Result)  # sent, but the socket goes before the ack
        await first.close(1012, "restart")
        other = await second.next_connection()
        register = await other.expect(Register)
        assert register.holding == [work.assignment_id]
        await other.send(_registered())
        assert await other.expect(Result) == result  # resent before anything else
        await other.send(Ack(assignment_id=work.assignment_id))
        await other.round_trip()
        assert agent._jobs.holding() == []


async def test_cancel_for_a_held_assignment_stops_it_and_a_cancelled_result_is_dropped(
    server: FakeServer,
) -> None:
    gate, runs = asyncio.Event(), []
    agent = gated_agent([server.url], gate, runs)
    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        running_one, finished_one = assign("slow"), assign("slow", {"wait": False})
        await conn.send(finished_one)
        first_result = await conn.expect(Result)  # never acknowledged
        await conn.send(running_one)
        await conn.round_trip()
        await conn.close(1011, "drop")
        again = await server.next_connection()
        register = await again.expect(Register)
        assert register.holding == [running_one.assignment_id, finished_one.assignment_id]
        await again.send(_registered())
        assert await again.expect(Result) == first_result
        # The server could take neither back: it cancels both. The running one stops and sends nothing; the
        # finished one's result is dropped rather than resent on every reconnect.
        await again.send(Cancel(assignment_id=running_one.assignment_id, reason="lease moved on"))
        await again.send(Cancel(assignment_id=finished_one.assignment_id, reason="lease moved on"))
        await again.round_trip()
        assert agent._jobs.holding() == []
        assert agent._jobs.idle.is_set()
        gate.set()
        await again.round_trip("after")
    assert runs == [str(finished_one.assignment_id), str(running_one.assignment_id)]


def _registered() -> Registered:
    return Registered(agent_id="held-1", heartbeat_interval=30, replica_id="fake-b")
