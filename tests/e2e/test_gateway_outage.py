"""A database outage on /ws/agents: upgrades and frames that cannot be recorded get a retryable close (1013),
not an HTTP 500 or a 1011, and the log gets one line per outage, not a traceback per socket. PostgreSQL is
reached through a proxy the test cuts, so other tests' databases are untouched."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.tcpproxy import TcpProxy
from tests.support.wsclient import RawAgent


@pytest.fixture(scope="module")
def proxy(database_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy.in_front_of(database_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def outage_server(
    database_url: str, proxy: TcpProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proxied = proxy.url_for(database_url)
    env = {"AGENT_HEALTH_CHECK_INTERVAL": "60s"}
    server = ServerProcess(proxied, env=env, log_dir=Path(tmp_path_factory.mktemp("outage-logs"))).start()
    yield server
    server.stop()


async def test_an_outage_closes_agent_sockets_1013_and_they_recover(
    outage_server: ServerProcess, proxy: TcpProxy
) -> None:
    server = outage_server
    key = server.create_key("agent", name="outage-agent")
    unused_key = server.create_key("agent", name="never-cached")  # its first use must ask the database
    agent = await RawAgent.connect(server.ws_url, key, agent_id="outage-1", capabilities=["outage"])
    with server.client() as client:
        task = client.post("/api/v1/tasks", json={"type": "outage", "capabilities": ["outage"]}).json()
    assign = await agent.expect("assign")
    result = {"type": "result", "assignment_id": assign["assignment_id"], "status": "succeeded", "output": 1}

    proxy.down()
    try:
        await agent.send(result)
        assert await agent.closed_with(timeout=15) == 1013  # could not be recorded: reconnect and resend
        for _ in range(5):
            refused = await RawAgent.connect(server.ws_url, unused_key, register=False)  # no HTTP 500
            assert await refused.closed_with(timeout=15) == 1013
    finally:
        proxy.up()

    async def reconnect() -> RawAgent:
        for _ in range(60):
            again = await RawAgent.connect(
                server.ws_url, key, agent_id="outage-1", capabilities=["outage"], register=False
            )
            await again.send(
                {
                    "type": "register",
                    "agent_id": "outage-1",
                    "model": "gpt-4",
                    "capabilities": [{"name": "outage"}],
                }
            )
            frame = None
            with contextlib.suppress(Exception):
                frame = await again.recv(timeout=5)
            if frame is not None and frame["type"] == "registered":
                return again
            await asyncio.sleep(0.5)
        raise AssertionError("no registration after the outage")

    again = await reconnect()
    try:
        await again.send(result)  # resent after the reconnect: recorded (as late) and acknowledged
        assert (await again.expect("ack", timeout=15))["assignment_id"] == assign["assignment_id"]
        fresh = await again.expect("assign", timeout=15)  # the task came back to the queue and to us
        await again.complete(fresh)
        with server.client() as client:
            assert client.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "succeeded"
    finally:
        await again.close()
    log = server.log_path.read_text()
    assert "Exception in ASGI application" not in log
    assert "could not authenticate" not in log
    assert "could not register" not in log
    assert log.count("database unavailable") <= 3, log[-3000:]
