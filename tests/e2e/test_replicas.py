"""Several replicas on one PostgreSQL, as real processes: work, waits, SSE, cancels and drains cross them; a
replica that dies, stops cleanly, pauses past the timeout or loses its listener loses nothing and runs nothing
twice; a second process with a live replica's id or port refuses to start and touches nothing.

Agents here are SDK agents in the test's own process (real sockets to the server processes), so the test can
count every execution of every handler: "exactly once" is checked on the agent side, not only in the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agentplane.sdk import Agent, TaskContext
from tests.support.polling import eventually_async
from tests.support.server import ServerProcess
from tests.support.tcpproxy import TcpProxy
from tests.support.wsclient import RawAgent

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
WAIT = 45.0
# Replicas notice each other quickly here; the hand-over grace stays at its default.
REPLICA_ENV = {"AGENTPLANE_REPLICA_HEARTBEAT": "0.5", "AGENTPLANE_REPLICA_TIMEOUT": "3"}


@dataclass
class Runs:
    """Every execution each handler saw, by task id, and how it ended."""

    started: Counter[uuid.UUID] = field(default_factory=Counter)
    finished: Counter[uuid.UUID] = field(default_factory=Counter)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def counting_agent(urls: list[str], key: str, agent_id: str, runs: Runs, *, concurrency: int = 4) -> Agent:
    agent = Agent(urls, key, "gpt-4", agent_id=agent_id, max_concurrency=concurrency, accept_after=0.0)

    @agent.handler("held")
    async def held(ctx: TaskContext) -> dict[str, str]:
        """Runs until the test releases it (or it is cancelled)."""
        runs.started[ctx.task_id] += 1
        try:
            await runs.release.wait()
        except asyncio.CancelledError:
            runs.cancelled.append(ctx.task_id)
            raise
        runs.finished[ctx.task_id] += 1
        return {"agent": agent_id}

    @agent.handler("nap")
    async def nap(ctx: TaskContext) -> dict[str, str]:
        runs.started[ctx.task_id] += 1
        await asyncio.sleep(float(ctx.payload.get("s", 0.5)))
        runs.finished[ctx.task_id] += 1
        return {"agent": agent_id}

    return agent


@contextlib.asynccontextmanager
async def running(*agents: Agent) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(agent.run()) for agent in agents]
    try:
        yield
    finally:
        for agent in agents:
            await asyncio.wait_for(agent.stop(), WAIT)
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)


async def submit(server: ServerProcess, task_type: str, **fields: Any) -> str:
    async with server.async_client() as client:
        body = {"type": task_type, "capabilities": [task_type], "payload": {}, **fields}
        response = await client.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def agent_status(server: ServerProcess, agent_id: str) -> str:
    async with server.async_client() as client:
        response = await client.get(f"/api/v1/agents/{agent_id}")
    return str(response.json()["status"]) if response.status_code == 200 else "absent"


async def connected(server: ServerProcess, agent_id: str, replica: ServerProcess | None = None) -> None:
    """The registry shows the agent connected (to ``replica``, when given)."""

    async def check() -> bool:
        async with server.async_client() as client:
            agent = (await client.get(f"/api/v1/agents/{agent_id}")).json()
        on = replica is None or agent.get("replica_id") == f"test-{replica.port}"
        return agent.get("status") in {"active", "busy"} and on

    await eventually_async(check, timeout=WAIT)


async def all_terminal(server: ServerProcess, task_ids: list[str]) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]] | None:
        tasks = [await server.task(task_id) for task_id in task_ids]
        return tasks if all(task["status"] in TERMINAL for task in tasks) else None

    tasks = await eventually_async(check, timeout=WAIT)
    assert tasks is not None
    return tasks


async def assignments(server: ServerProcess, task_id: str) -> list[dict[str, Any]]:
    async with server.async_client() as client:
        return list((await client.get(f"/api/v1/tasks/{task_id}/assignments")).json()["items"])


@pytest.fixture(scope="module")
def pair(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    logs = tmp_path_factory.mktemp("replicas")
    servers = [ServerProcess(database_url, env=dict(REPLICA_ENV), log_dir=logs).start() for _ in range(2)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def agent_key(pair: list[ServerProcess]) -> str:
    return pair[0].create_key("agent", name="replicas")


# ------------------------------------------------------------------ one fleet across replicas


async def test_a_task_submitted_on_one_replica_runs_on_the_other_and_wakes_waiters_there(
    pair: list[ServerProcess], agent_key: str
) -> None:
    a, b = pair
    runs = Runs()
    runs.release.set()
    agent = counting_agent([a.base_url], agent_key, "cross-1", runs)
    async with running(agent):
        await connected(b, "cross-1", replica=a)
        task_id = await submit(b, "held")
        async with b.async_client() as client:
            # The long-poll and the event stream on B end when A records the result (B is woken by the bus).
            waited = (await client.get(f"/api/v1/tasks/{task_id}", params={"wait": 30})).json()
            assert waited["status"] == "succeeded"
            assert waited["result"] == {"agent": "cross-1"}
            events = []
            async with client.stream("GET", f"/api/v1/tasks/{task_id}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        events.append(orjson.loads(line.removeprefix("data:").strip()))
            assert events[-1]["to"] == "succeeded"
    assert runs.started == {uuid.UUID(task_id): 1}


async def test_a_cancel_sent_through_one_replica_reaches_the_agent_on_the_other(
    pair: list[ServerProcess], agent_key: str
) -> None:
    a, b = pair
    runs = Runs()
    agent = counting_agent([a.base_url], agent_key, "cross-cancel", runs)
    async with running(agent):
        await connected(b, "cross-cancel", replica=a)
        task_id = await submit(b, "held")
        await eventually_async(lambda: _true(runs.started), timeout=WAIT)
        async with b.async_client() as client:
            assert (await client.post(f"/api/v1/tasks/{task_id}/cancel")).status_code == 200
        await eventually_async(lambda: _true(runs.cancelled), timeout=WAIT)
        assert (await b.task(task_id))["status"] == "cancelled"


async def test_a_drain_sent_through_one_replica_drains_the_agent_on_the_other(
    pair: list[ServerProcess], agent_key: str
) -> None:
    a, b = pair
    runs = Runs()
    agent = counting_agent([a.base_url], agent_key, "cross-drain", runs)
    async with running(agent):
        await connected(b, "cross-drain", replica=a)
        async with b.async_client() as client:
            assert (await client.post("/api/v1/agents/cross-drain/drain")).status_code == 200
        await eventually_async(lambda: _true(agent.draining), timeout=WAIT)


async def test_the_replicas_endpoint_shows_each_replica_with_its_agents_and_leases(
    pair: list[ServerProcess], agent_key: str
) -> None:
    a, b = pair
    runs = Runs()
    agent = counting_agent([a.base_url], agent_key, "listed", runs)
    async with running(agent):
        await connected(a, "listed", replica=a)
        task_id = await submit(b, "held")
        await eventually_async(lambda: _true(runs.started), timeout=WAIT)
        async with b.async_client() as client:
            response = await client.get("/api/v1/replicas")
            assert response.status_code == 200
            replicas = {item["id"]: item for item in response.json()["items"]}
            async with b.async_client(agent_key) as as_agent:
                assert (await as_agent.get("/api/v1/replicas")).status_code == 403
        assert {f"test-{a.port}", f"test-{b.port}"} <= set(replicas)
        on_a = replicas[f"test-{a.port}"]
        assert on_a["alive"]
        assert on_a["connected_agents"] >= 1
        assert on_a["leases_held"] >= 1
        runs.release.set()
        await all_terminal(b, [task_id])


def _serve(database_url: str, port: int, replica_id: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "AGENTPLANE_PORT": str(port),
            "AGENTPLANE_REPLICA_ID": replica_id,
            "AGENTPLANE_ADMIN_KEY": "ap_test_admin_key_for_the_suite_only_000000",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "agentplane", "serve"], env=env, capture_output=True, text=True, timeout=60
    )


async def test_a_second_process_with_a_live_replicas_id_or_port_refuses_and_touches_nothing(
    pair: list[ServerProcess], agent_key: str
) -> None:
    a, _ = pair
    runs = Runs()
    agent = counting_agent([a.base_url], agent_key, "undisturbed", runs)
    async with running(agent):
        await connected(a, "undisturbed", replica=a)
        task_id = await submit(a, "held")
        await eventually_async(lambda: _true(runs.started), timeout=WAIT)

        same_port = await asyncio.to_thread(_serve, a.database_url, a.port, "another-replica")
        assert same_port.returncode == 1
        assert f"cannot listen on 127.0.0.1:{a.port}" in same_port.stderr
        assert "Traceback" not in same_port.stderr
        assert "listening on" not in same_port.stdout  # announced only once bound, so never here
        same_id = await asyncio.to_thread(_serve, a.database_url, _free_port(), f"test-{a.port}")
        assert same_id.returncode == 1
        refusal = [line for line in same_id.stderr.splitlines() if f"test-{a.port}" in line]
        assert refusal
        assert "in use" in refusal[0]
        assert "Traceback" not in same_id.stderr

        # The live replica's agent is still connected and its lease still running: nothing was "recovered".
        assert await agent_status(a, "undisturbed") in {"active", "busy"}
        task = await a.task(task_id)
        assert task["status"] == "running"
        assert task["attempt"] == 1
        runs.release.set()
        (done,) = await all_terminal(a, [task_id])
    assert done["status"] == "succeeded"
    assert runs.started == {uuid.UUID(task_id): 1}


def _free_port() -> int:
    from tests.support.server import free_port

    return free_port()


async def _true(value: object) -> bool:
    return bool(value)


# ------------------------------------------------------------------ replicas that die, stop, pause


@pytest.fixture
def fresh_pair(fresh_database_url: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers = [
        ServerProcess(fresh_database_url, env=dict(REPLICA_ENV), log_dir=tmp_path).start() for _ in range(2)
    ]
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


async def _failover(servers: list[ServerProcess], end: str) -> None:
    a, b = servers
    key = a.create_key("agent", name=f"failover-{end}")
    runs = Runs()
    agents = [
        counting_agent([a.base_url, b.base_url], key, f"{end}-{index}", runs, concurrency=4)
        for index in range(2)
    ]
    async with running(*agents):
        for agent in agents:
            await connected(b, agent._agent_id or "", replica=a)
        task_ids = [await submit(b, "nap", payload={"s": 1.5}, max_attempts=3) for _ in range(24)]
        await eventually_async(lambda: _true(sum(runs.started.values()) >= 6), timeout=WAIT)
        if end == "kill":
            await asyncio.to_thread(a.kill)
        else:
            await asyncio.to_thread(a.stop)
        tasks = await all_terminal(b, task_ids)
    assert Counter(task["status"] for task in tasks) == {"succeeded": 24}
    executions = Counter({uuid.UUID(task_id): runs.started[uuid.UUID(task_id)] for task_id in task_ids})
    assert set(executions.values()) == {1}, f"executed more than once: {executions.most_common(3)}"
    assert runs.finished == executions
    for task_id in task_ids:  # and recorded once: one succeeded assignment each
        history = await assignments(b, task_id)
        assert [item["status"] for item in history].count("succeeded") == 1


async def test_killing_a_replica_under_load_runs_every_task_exactly_once(
    fresh_pair: list[ServerProcess],
) -> None:
    await _failover(fresh_pair, "kill")


async def test_a_clean_stop_hands_running_work_over_and_runs_every_task_exactly_once(
    fresh_pair: list[ServerProcess],
) -> None:
    await _failover(fresh_pair, "stop")


async def test_a_clean_stop_closes_agent_sockets_with_4010(fresh_pair: list[ServerProcess]) -> None:
    a, _ = fresh_pair
    key = a.create_key("agent", name="goodbye")
    raw = await RawAgent.connect(a.ws_url, key, agent_id="goodbye-1", capabilities=["held"])
    stopping = asyncio.create_task(asyncio.to_thread(a.stop))
    try:
        assert await raw.closed_with(timeout=WAIT) == 4010
    finally:
        await stopping


async def test_a_replica_paused_past_the_timeout_comes_back_without_showing_its_agents_offline(
    fresh_pair: list[ServerProcess],
) -> None:
    a, b = fresh_pair
    key = a.create_key("agent", name="paused")
    runs = Runs()
    runs.release.set()
    agent = counting_agent([a.base_url], key, "paused-1", runs)
    async with running(agent):
        await connected(b, "paused-1", replica=a)
        assert a.process is not None
        a.process.send_signal(signal.SIGSTOP)
        try:
            # B declares A dead: the registry shows its agent offline while A is frozen.
            async def offline() -> bool:
                return await agent_status(b, "paused-1") == "offline"

            await eventually_async(offline, timeout=WAIT)
        finally:
            a.process.send_signal(signal.SIGCONT)
        # Back: A notices at its next heartbeat and its agent registers again, on A (its only URL).
        await connected(b, "paused-1", replica=a)
        task_id = await submit(b, "nap", payload={"s": 0.1})
        (done,) = await all_terminal(b, [task_id])
    assert done["status"] == "succeeded"
    async with b.async_client() as client:
        replicas = {item["id"] for item in (await client.get("/api/v1/replicas")).json()["items"]}
    assert f"test-{a.port}" in replicas  # it announced itself again


async def test_a_cancel_and_a_drain_sent_while_the_holders_listener_is_down_still_arrive(
    fresh_database_url: str, tmp_path: Path
) -> None:
    proxy = TcpProxy.in_front_of(fresh_database_url).start()
    # A is not declared dead while its database is away (that is another test): only its listener is lost.
    env = {**REPLICA_ENV, "AGENTPLANE_REPLICA_TIMEOUT": "60"}
    a = ServerProcess(proxy.url_for(fresh_database_url), env=env, log_dir=tmp_path).start()
    b = ServerProcess(fresh_database_url, env=env, log_dir=tmp_path).start()
    try:
        key = b.create_key("agent", name="listener-cut")
        runs = Runs()
        agent = counting_agent([a.base_url], key, "cut-1", runs)
        async with running(agent):
            await connected(b, "cut-1", replica=a)
            task_id = await submit(b, "held", max_attempts=1)
            await eventually_async(lambda: _true(runs.started), timeout=WAIT)
            await asyncio.to_thread(proxy.down)  # A loses every database connection, its listener too
            try:
                async with b.async_client() as client:
                    assert (await client.post(f"/api/v1/tasks/{task_id}/cancel")).status_code == 200
                    assert (await client.post("/api/v1/agents/cut-1/drain")).status_code == 200
                await asyncio.sleep(1.0)  # the NOTIFYs are sent and lost meanwhile
                assert runs.cancelled == []
                assert not agent.draining
            finally:
                await asyncio.to_thread(proxy.up)
            await eventually_async(lambda: _true(runs.cancelled), timeout=WAIT)
            await eventually_async(lambda: _true(agent.draining), timeout=WAIT)
        assert (await b.task(task_id))["status"] == "cancelled"
    finally:
        a.kill()
        b.kill()
        await asyncio.to_thread(proxy.stop)


async def test_three_replicas_share_one_fleet_and_lose_nothing(
    fresh_database_url: str, tmp_path: Path
) -> None:
    servers = [
        ServerProcess(fresh_database_url, env=dict(REPLICA_ENV), log_dir=tmp_path).start() for _ in range(3)
    ]
    try:
        key = servers[0].create_key("agent", name="three")
        runs = Runs()
        agents = [
            counting_agent([server.base_url], key, f"three-{index}", runs, concurrency=4)
            for index, server in enumerate(servers)
        ]
        async with running(*agents):
            for index, server in enumerate(servers):
                await connected(servers[0], f"three-{index}", replica=server)
            task_ids = [await submit(servers[n % 3], "nap", payload={"s": 0.05}) for n in range(60)]
            tasks = await all_terminal(servers[2], task_ids)
        assert Counter(task["status"] for task in tasks) == {"succeeded": 60}
        assert set(runs.started[uuid.UUID(task_id)] for task_id in task_ids) == {1}
        async with httpx.AsyncClient(
            base_url=servers[1].base_url, headers={"Authorization": f"Bearer {servers[1].admin_key}"}
        ) as client:
            listed = (await client.get("/api/v1/replicas")).json()["items"]
        assert len([item for item in listed if item["alive"]]) == 3
    finally:
        for server in servers:
            server.kill()
