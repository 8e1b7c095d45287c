"""The agent SDK against a fake `/ws/agents` server written here (the real gateway has its own tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from agentplane import agent_cli, cli
from agentplane._sdk_link import reconnect_delay
from agentplane.sdk import Agent, AgentRejected, CapabilitySpec, HandlerResult, TaskContext, TaskFailed, Usage
from app.errors import CloseCode
from app.gateway.protocol import (
    AGENT_FRAME,
    Accept,
    Ack,
    Assign,
    Cancel,
    Drain,
    DrainRequest,
    ErrorFrame,
    Frame,
    Heartbeat,
    Ping,
    Pong,
    Progress,
    Register,
    Registered,
    Reject,
    Result,
)

F = TypeVar("F")

WAIT = 10.0  # generous: these only bound a hang, they never pace the test
KEY = "ap_test_key_0123456789abcdefghij"


class FakeConnection:
    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.authorization = ws.request.headers.get("Authorization") if ws.request else None

    async def send(self, frame: Frame) -> None:
        await self.ws.send(frame.dump().decode())

    async def recv(self, *, skip_heartbeats: bool = True) -> Any:
        while True:
            frame = AGENT_FRAME.validate_json(await asyncio.wait_for(self.ws.recv(), WAIT))
            if not (skip_heartbeats and isinstance(frame, Heartbeat)):
                return frame

    async def expect(self, kind: type[F]) -> F:
        frame = await self.recv()
        assert isinstance(frame, kind), f"expected {kind.__name__}, got {frame!r}"
        return frame

    async def register(
        self, *, agent_id: str = "agent-from-server", heartbeat_interval: float = 30
    ) -> Register:
        register = await self.expect(Register)
        await self.send(
            Registered(
                agent_id=register.agent_id or agent_id,
                heartbeat_interval=heartbeat_interval,
                replica_id="fake-replica",
            )
        )
        return register

    async def round_trip(self, nonce: str = "sync") -> None:
        """A ping answered proves the agent handled every frame sent before it."""
        await self.send(Ping(nonce=nonce))
        assert (await self.expect(Pong)).nonce == nonce

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)


class FakeServer:
    def __init__(self) -> None:
        self.url = ""
        self.connections: asyncio.Queue[FakeConnection] = asyncio.Queue()
        self.accepted = 0
        self.refuse_with: int | None = None  # an HTTP status for every handshake
        self.refusals = 0
        self.refused_twice = asyncio.Event()

    async def handle(self, ws: ServerConnection) -> None:
        self.accepted += 1
        await self.connections.put(FakeConnection(ws))
        await ws.wait_closed()

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.refuse_with is None:
            return None
        self.refusals += 1
        if self.refusals >= 2:
            self.refused_twice.set()
        return Response(self.refuse_with, "Refused", Headers(), b"")

    async def next_connection(self) -> FakeConnection:
        return await asyncio.wait_for(self.connections.get(), WAIT)


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    async with serve(
        fake.handle, "127.0.0.1", 0, compression=None, process_request=fake.process_request
    ) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}/ws/agents"
        yield fake


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        await asyncio.wait_for(agent.stop(), WAIT)
        if task.done() and not task.cancelled():
            task.exception()  # the test inspected it already, or it does not matter now
        else:
            await asyncio.wait_for(task, WAIT)


def assign(task_type: str = "echo", payload: dict[str, Any] | None = None) -> Assign:
    return Assign(
        assignment_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        task_type=task_type,
        payload=payload or {},
        timeout=60,
        deadline=datetime.now(UTC) + timedelta(minutes=1),
        attempt=1,
    )


def make_agent(server: FakeServer, **kwargs: Any) -> Agent:
    kwargs.setdefault("capabilities", ["echo"])
    kwargs.setdefault("accept_after", 0.0)  # accept at once, as most tests expect; deferral is tested below
    agent = Agent(url=server.url, key=KEY, model="gpt-4", **kwargs)

    @agent.handler("echo")
    async def echo(ctx: TaskContext) -> Any:
        return ctx.payload

    return agent


async def test_registers_first_with_its_fields(server: FakeServer) -> None:
    agent = make_agent(
        server,
        capabilities=["code-generation", CapabilitySpec(name="review", type="analysis", version="2.0")],
        max_concurrency=3,
        agent_id="agent-7",
        name="tester",
    )
    async with running(agent):
        conn = await server.next_connection()
        register = await conn.register()
    assert conn.authorization == f"Bearer {KEY}"
    assert register.agent_id == "agent-7"
    assert register.name == "tester"
    assert register.model == "gpt-4"
    assert register.max_concurrency == 3
    assert register.protocol == 1
    assert [cap.name for cap in register.capabilities] == ["code-generation", "review"]
    assert register.capabilities[1].type == "analysis"


async def test_capabilities_default_to_handled_task_types(server: FakeServer) -> None:
    agent = make_agent(server, capabilities=None)
    agent.add_handler("summarise", lambda ctx: "summary")
    async with running(agent):
        conn = await server.next_connection()
        register = await conn.register()
        await conn.round_trip()
    assert [cap.name for cap in register.capabilities] == ["echo", "summarise"]
    assert agent.agent_id == "agent-from-server"


async def test_async_handler_sends_accept_progress_then_result_with_usage(server: FakeServer) -> None:
    agent = make_agent(server)

    @agent.handler("work")
    async def work(ctx: TaskContext) -> dict[str, Any]:
        await ctx.progress(0.5, "half way")
        ctx.report_usage(input_tokens=10, output_tokens=20, cost=0.01)
        ctx.report_usage(input_tokens=1)
        return {"doubled": ctx.payload["n"] * 2, "attempt": ctx.attempt}

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        frame = assign("work", {"n": 21})
        await conn.send(frame)
        assert (await conn.expect(Accept)).assignment_id == frame.assignment_id
        progress = await conn.expect(Progress)
        assert (progress.progress, progress.message) == (0.5, "half way")
        result = await conn.expect(Result)
    assert result.assignment_id == frame.assignment_id
    assert result.status == "succeeded"
    assert result.output == {"doubled": 42, "attempt": 1}
    assert result.usage == Usage(input_tokens=11, output_tokens=20, cost=0.01)


async def test_a_quick_handler_sends_its_result_without_an_accept(server: FakeServer) -> None:
    agent = make_agent(server, accept_after=5.0)

    @agent.handler("quick")
    async def quick(ctx: TaskContext) -> dict[str, Any]:
        return {"n": ctx.payload["n"]}

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        frame = assign("quick", {"n": 1})
        await conn.send(frame)
        result = await conn.expect(Result)  # no Accept before it
        await asyncio.sleep(0.1)
        await conn.round_trip()  # and none after it: the pong is the next frame
    assert (result.assignment_id, result.output) == (frame.assignment_id, {"n": 1})


async def test_a_slow_handler_sends_accept_once_it_has_run_for_accept_after(server: FakeServer) -> None:
    agent = make_agent(server, accept_after=0.05)
    release = asyncio.Event()

    @agent.handler("slow")
    async def slow(ctx: TaskContext) -> dict[str, Any]:
        await release.wait()
        return {}

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        frame = assign("slow")
        await conn.send(frame)
        assert (await conn.expect(Accept)).assignment_id == frame.assignment_id
        release.set()
        assert (await conn.expect(Result)).assignment_id == frame.assignment_id


def test_a_negative_accept_after_is_refused() -> None:
    with pytest.raises(ValueError, match="accept_after"):
        Agent(url="ws://127.0.0.1:1/ws/agents", key=KEY, model="gpt-4", accept_after=-1)


async def test_sync_handler_runs_in_a_thread_and_reports_progress(server: FakeServer) -> None:
    agent = make_agent(server)
    loop_thread = threading.get_ident()

    @agent.handler("sync")
    def sync(ctx: TaskContext) -> HandlerResult:
        ctx.progress(0.25, "from a thread")
        return HandlerResult(
            output={"other_thread": threading.get_ident() != loop_thread},
            usage=Usage(input_tokens=3, output_tokens=4),
        )

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        await conn.send(assign("sync"))
        await conn.expect(Accept)
        assert (await conn.expect(Progress)).message == "from a thread"
        result = await conn.expect(Result)
    assert result.status == "succeeded"
    assert result.output == {"other_thread": True}
    assert result.usage == Usage(input_tokens=3, output_tokens=4)


async def test_answers_ping_while_a_handler_runs(server: FakeServer) -> None:
    agent = make_agent(server)
    release = asyncio.Event()

    @agent.handler("slow")
    async def slow(ctx: TaskContext) -> str:
        await release.wait()
        return "done"

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        await conn.send(assign("slow"))
        await conn.expect(Accept)
        await conn.send(Ping(nonce="n-1"))
        assert (await conn.expect(Pong)).nonce == "n-1"
        release.set()
        assert (await conn.expect(Result)).output == "done"


async def test_task_failed_and_exceptions_become_failed_results(server: FakeServer) -> None:
    agent = make_agent(server)

    @agent.handler("refuse")
    async def refuse(ctx: TaskContext) -> None:
        raise TaskFailed("bad_input", "the payload has no text", retryable=True)

    @agent.handler("crash")
    def crash(ctx: TaskContext) -> None:
        raise KeyError("text")

    @agent.handler("unserialisable")
    async def unserialisable(ctx: TaskContext) -> object:
        return object()

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        results = {}
        for task_type in ("refuse", "crash", "unserialisable"):
            await conn.send(assign(task_type))
            await conn.expect(Accept)
            results[task_type] = await conn.expect(Result)
    for result in results.values():
        assert result.status == "failed"
        assert result.error is not None
    refused, crashed, unserialisable_result = results["refuse"], results["crash"], results["unserialisable"]
    assert refused.error is not None
    assert crashed.error is not None
    assert unserialisable_result.error is not None
    assert (refused.error.code, refused.error.message, refused.error.retryable) == (
        "bad_input",
        "the payload has no text",
        True,
    )
    assert (crashed.error.code, crashed.error.message, crashed.error.retryable) == (
        "handler_error",
        "KeyError('text')",
        False,
    )
    assert unserialisable_result.error.code == "invalid_output"


async def test_unknown_task_type_is_rejected(server: FakeServer) -> None:
    async with running(make_agent(server)):
        conn = await server.next_connection()
        await conn.register()
        frame = assign("translate")
        await conn.send(frame)
        reject = await conn.expect(Reject)
    assert reject.assignment_id == frame.assignment_id
    assert "translate" in reject.reason


async def test_at_most_max_concurrency_handlers_run(server: FakeServer) -> None:
    agent = make_agent(server, max_concurrency=2)
    release = asyncio.Event()
    running_now = 0
    most = 0

    @agent.handler("hold")
    async def hold(ctx: TaskContext) -> str:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        try:
            await release.wait()
        finally:
            running_now -= 1
        return "held"

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        frames = [assign("hold") for _ in range(3)]
        for frame in frames:
            await conn.send(frame)
        replies = [await conn.recv() for _ in frames]
        assert [type(reply) for reply in replies] == [Accept, Accept, Reject]
        assert replies[2].assignment_id == frames[2].assignment_id
        assert "capacity" in replies[2].reason
        release.set()
        results = [await conn.expect(Result) for _ in range(2)]
    assert {result.assignment_id for result in results} == {frames[0].assignment_id, frames[1].assignment_id}
    assert most == 2


async def test_cancel_reaches_an_async_handler_and_sends_no_result(server: FakeServer) -> None:
    agent = make_agent(server)
    observed = asyncio.Event()
    seen: dict[str, Any] = {}

    @agent.handler("forever")
    async def forever(ctx: TaskContext) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.update(cancelled=ctx.cancelled, reason=ctx.cancel_reason)
            observed.set()
            raise
        return "unreachable"

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        frame = assign("forever")
        await conn.send(frame)
        await conn.expect(Accept)
        await conn.send(Cancel(assignment_id=frame.assignment_id, reason="client cancelled"))
        await asyncio.wait_for(observed.wait(), WAIT)
        # Frames go out in order: had a result been sent, it would arrive before this pong.
        await conn.send(Ping(nonce="after-cancel"))
        assert (await conn.expect(Pong)).nonce == "after-cancel"
        assert agent.active == 0
    assert seen == {"cancelled": True, "reason": "client cancelled"}


async def test_cancel_sets_the_flag_a_sync_handler_polls(server: FakeServer) -> None:
    agent = make_agent(server)
    finished = threading.Event()

    @agent.handler("poll")
    def poll(ctx: TaskContext) -> str:
        deadline = time.monotonic() + WAIT
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        finished.set()
        return "too late"

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        frame = assign("poll")
        await conn.send(frame)
        await conn.expect(Accept)
        await conn.send(Cancel(assignment_id=frame.assignment_id))
        assert await asyncio.to_thread(finished.wait, WAIT)
        await conn.send(Ping(nonce="after-cancel"))
        assert (await conn.expect(Pong)).nonce == "after-cancel"


async def test_unacked_results_are_resent_after_reconnect_with_the_same_agent_id(server: FakeServer) -> None:
    agent = make_agent(server, agent_id=None)
    async with running(agent):
        first = await server.next_connection()
        assert (await first.register(agent_id="agent-given-by-server")).agent_id is None
        frame = assign("echo", {"x": 1})
        await first.send(frame)
        await first.expect(Accept)
        assert (await first.expect(Result)).output == {"x": 1}
        await first.close(1011, "server restarting")  # before any ack

        second = await server.next_connection()
        assert (await second.register()).agent_id == "agent-given-by-server"
        resent = await second.expect(Result)
        assert (resent.assignment_id, resent.output) == (frame.assignment_id, {"x": 1})
        await second.send(Ack(assignment_id=frame.assignment_id))
        await second.send(Ping(nonce="acked"))
        assert (await second.expect(Pong)).nonce == "acked"
        await second.close(1001, "going away")

        third = await server.next_connection()
        assert (await third.register()).agent_id == "agent-given-by-server"
        await third.send(Ping(nonce="nothing-before-me"))
        assert (await third.expect(Pong)).nonce == "nothing-before-me"


async def test_a_result_the_server_does_not_know_is_not_resent(server: FakeServer) -> None:
    async with running(make_agent(server)):
        first = await server.next_connection()
        await first.register()
        frame = assign("echo")
        await first.send(frame)
        await first.expect(Accept)
        await first.expect(Result)
        await first.send(
            ErrorFrame(code="unknown_assignment", message="no such assignment", ref=str(frame.assignment_id))
        )
        await first.round_trip()
        await first.close(1011, "server restarting")

        second = await server.next_connection()
        await second.register()
        await second.round_trip("nothing-resent")


async def test_unauthorized_close_raises_agent_rejected_without_reconnecting(server: FakeServer) -> None:
    agent = make_agent(server)
    async with running(agent) as task:
        conn = await server.next_connection()
        await conn.expect(Register)
        await conn.close(CloseCode.UNAUTHORIZED, "unknown key")
        with pytest.raises(AgentRejected) as caught:
            await asyncio.wait_for(task, WAIT)
    assert (caught.value.code, caught.value.reason) == (4001, "unknown key")
    assert server.accepted == 1


async def test_http_401_at_the_handshake_raises_agent_rejected(server: FakeServer) -> None:
    server.refuse_with = 401
    with pytest.raises(AgentRejected) as caught:
        await asyncio.wait_for(make_agent(server).run(), WAIT)
    assert caught.value.code == CloseCode.UNAUTHORIZED


async def test_replaced_connection_ends_run_quietly(server: FakeServer) -> None:
    agent = make_agent(server)
    async with running(agent) as task:
        conn = await server.next_connection()
        await conn.register()
        await conn.close(CloseCode.REPLACED, "replaced by a newer connection")
        await asyncio.wait_for(task, WAIT)
    assert server.accepted == 1


async def test_drain_request_makes_new_assigns_rejected(server: FakeServer) -> None:
    agent = make_agent(server)
    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        await conn.send(DrainRequest(reason="operator drain"))
        await conn.send(assign("echo"))
        assert "draining" in (await conn.expect(Reject)).reason
    assert agent.draining


async def test_drain_finishes_held_work_and_returns_once_acked(server: FakeServer) -> None:
    agent = make_agent(server)
    release = asyncio.Event()

    @agent.handler("hold")
    async def hold(ctx: TaskContext) -> str:
        await release.wait()
        return "finished"

    async with running(agent):
        conn = await server.next_connection()
        await conn.register()
        frame = assign("hold")
        await conn.send(frame)
        await conn.expect(Accept)
        draining = asyncio.create_task(agent.drain())
        await conn.expect(Drain)
        await conn.send(assign("echo"))
        await conn.expect(Reject)
        release.set()
        assert (await conn.expect(Result)).output == "finished"
        assert not draining.done()
        await conn.send(Ack(assignment_id=frame.assignment_id))
        assert await asyncio.wait_for(draining, WAIT) is True


async def test_error_frames_are_logged_and_survived(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentplane.sdk")
    async with running(make_agent(server)):
        conn = await server.next_connection()
        await conn.register()
        await conn.send(ErrorFrame(code="invalid_message", message="bad frame", ref="x"))
        await conn.ws.send("this is not json")
        await conn.send(Ping(nonce="still-here"))
        assert (await conn.expect(Pong)).nonce == "still-here"
    assert any("invalid_message" in record.getMessage() for record in caplog.records)


async def test_heartbeats_carry_the_active_count(server: FakeServer) -> None:
    async with running(make_agent(server)):
        conn = await server.next_connection()
        await conn.register(heartbeat_interval=1)
        heartbeat = await conn.recv(skip_heartbeats=False)
    assert heartbeat == Heartbeat(active=0)


async def test_stop_ends_a_run_that_cannot_connect(server: FakeServer) -> None:
    server.refuse_with = 503  # not a refusal of the agent: it keeps retrying with backoff
    agent = make_agent(server)
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(server.refused_twice.wait(), WAIT)
    await asyncio.wait_for(agent.stop(), WAIT)
    await asyncio.wait_for(task, WAIT)
    assert server.accepted == 0


def test_reconnect_delay_starts_fast_and_is_capped() -> None:
    firsts = [reconnect_delay(1) for _ in range(50)]
    assert all(0.2 <= delay <= 0.5 for delay in firsts)
    assert all(delay <= 5.0 for delay in (reconnect_delay(n) for n in range(1, 100)))
    assert reconnect_delay(40) == 5.0


# ---------------------------------------------------------------- `agentplane agent`


def test_agent_command_without_a_key_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENTPLANE_AGENT_KEY", raising=False)
    assert cli.main(["agent", "--demo"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    "spec",
    ["no-equals-sign", "echo=agentplane.demo", "echo=no_such_module_here:f", "echo=agentplane.demo:nope"],
)
def test_agent_command_with_a_bad_handler_spec_exits_2(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["agent", "--key", KEY, "--model", "m", "--handler", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert spec in err


def test_agent_command_builds_the_demo_agent_plus_extra_handlers() -> None:
    args = cli.build_parser().parse_args(
        ["agent", "--demo", "--key", KEY, "--handler", "shout=agentplane.demo:echo", "--max-concurrency", "8"]
    )
    agent = agent_cli.build_agent(args, KEY)
    register = agent._register_frame()
    assert register.model == "demo-1"
    assert register.max_concurrency == 8
    assert [cap.name for cap in register.capabilities][-2:] == ["answer", "shout"]
