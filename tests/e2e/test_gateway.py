"""/ws/agents over real sockets against a real server process: registration, errors, supersede, drain,
deregister, health and disconnects."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import websockets

from tests.support.polling import eventually_async
from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent

SERVER_ENV = {
    "AGENT_HEALTH_CHECK_INTERVAL": "0.5s",
    "AGENT_HEALTH_CHECK_TIMEOUT": "0.4s",
    "AGENT_MODELS_ALLOWED": "gpt-4,claude-3-opus",
    "AGENT_REGISTER_TIMEOUT": "1s",
    "AGENT_MAX_MESSAGE_BYTES": "65536",
}


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="gateway-agents")


async def agent_status(server: ServerProcess, agent_id: str) -> str | None:
    async with server.async_client() as client:
        response = await client.get(f"/api/v1/agents/{agent_id}")
    return str(response.json()["status"]) if response.status_code == 200 else None


async def test_register_appears_in_registry_index_and_totals(server: ServerProcess, agent_key: str) -> None:
    agent = await RawAgent.connect(
        server.ws_url, agent_key, agent_id="reg-1", model="gpt-4", capabilities=["code-review", "summarise"]
    )
    try:
        async with server.async_client() as client:
            detail = (await client.get("/api/v1/agents/reg-1")).json()
            assert detail["status"] == "active"
            assert detail["model"] == "gpt-4"
            assert [c["name"] for c in detail["capabilities"]] == ["code-review", "summarise"]
            assert detail["replica_id"] == f"test-{server.port}"
            listed = (await client.get("/api/v1/agents", params={"capability": "code-review"})).json()
            assert [a["id"] for a in listed["items"]] == ["reg-1"]
            index = (await client.get("/api/v1/capabilities")).json()["items"]
            review = next(item for item in index if item["name"] == "code-review")
            assert review["agents"] == ["reg-1"]
            assert review["active_agents"] == 1
            totals = (await client.get("/api/v1/registry/metrics")).json()
            assert totals["agents_by_model"]["gpt-4"] >= 1
            assert totals["unique_capabilities"] >= 2
    finally:
        await agent.close()


async def test_a_reconnect_replaces_the_capability_index_entries(
    server: ServerProcess, agent_key: str
) -> None:
    url = server.ws_url
    first = await RawAgent.connect(url, agent_key, agent_id="reindex", capabilities=["old", "kept"])
    await first.close()
    second = await RawAgent.connect(url, agent_key, agent_id="reindex", capabilities=["kept", "new"])
    try:
        async with server.async_client() as client:
            index = (await client.get("/api/v1/capabilities")).json()["items"]
            holders = {item["name"]: item["agents"] for item in index if "reindex" in item["agents"]}
            assert holders == {"kept": ["reindex"], "new": ["reindex"]}
    finally:
        await second.close()


async def test_a_wrong_key_is_closed_4001(server: ServerProcess) -> None:
    agent = await RawAgent.connect(server.ws_url, "ap_wrong", register=False)
    assert await agent.closed_with() == 4001


async def test_a_client_key_cannot_be_an_agent(server: ServerProcess) -> None:
    client_key = server.create_key("client", name="not-an-agent")
    agent = await RawAgent.connect(server.ws_url, client_key, register=False)
    assert await agent.closed_with() == 4001


async def test_the_key_may_come_in_the_query_and_never_reaches_the_log(
    server: ServerProcess, agent_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="query-1", via_query=True)
    await agent.close()
    assert agent_key not in server.log_path.read_text()


async def test_a_disallowed_model_is_closed_4003_with_the_reason(
    server: ServerProcess, agent_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, register=False)
    await agent.send({"type": "register", "model": "llama-3", "capabilities": [{"name": "x"}]})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await agent.ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4003
    assert "llama-3" in closed.value.rcvd.reason


async def test_no_register_in_time_is_closed_4002(server: ServerProcess, agent_key: str) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, register=False)
    assert await agent.closed_with(timeout=5) == 4002


async def test_an_invalid_register_gets_an_error_frame_naming_the_field(
    server: ServerProcess, agent_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, register=False)
    try:
        await agent.send({"type": "register", "model": "gpt-4", "capabilities": []})
        error = await agent.recv()
        assert error["type"] == "error"
        assert error["code"] == "invalid_message"
        assert "capabilities" in error["message"]
        await agent.send(
            {"type": "register", "model": "gpt-4", "capabilities": [{"name": "a"}, {"name": "a"}]}
        )
        error = await agent.recv()
        assert "unique" in error["message"]
        await agent.send({"type": "register", "model": "gpt-4", "capabilities": [{"name": "a"}]})
        assert (await agent.recv())["type"] == "registered"
    finally:
        await agent.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "invalid_message"),
        ("[1, 2]", "invalid_message"),
        (json.dumps({"type": "teleport"}), "unknown_type"),
        (json.dumps({"type": "accept", "assignment_id": "not-a-uuid"}), "invalid_message"),
        (
            json.dumps({"type": "progress", "assignment_id": "6f1e2b8a-0000-4000-8000-000000000000"}),
            "invalid_message",
        ),
        (json.dumps({"type": "heartbeat", "active": -1, "surprise": True}), "invalid_message"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_socket_stays(
    server: ServerProcess, agent_key: str, frame: str, code: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="bad-frames")
    try:
        await agent.send(frame)
        error = await agent.expect("error")
        assert error["code"] == code
        await agent.send({"type": "heartbeat", "active": 0})
        ping = await agent.expect("ping", answer_pings=False)  # still served: the health monitor pings us
        await agent.send({"type": "pong", "nonce": ping["nonce"]})
        assert await agent_status(server, "bad-frames") == "active"
    finally:
        await agent.close()


async def test_an_oversize_frame_is_refused_and_the_socket_stays(
    server: ServerProcess, agent_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="big-frames")
    try:
        await agent.send({"type": "heartbeat", "active": 0, "padding": "x" * 70_000})
        error = await agent.expect("error")
        assert error["code"] == "too_large"
        ping = await agent.expect("ping", answer_pings=False)
        await agent.send({"type": "pong", "nonce": ping["nonce"]})
        assert await agent_status(server, "big-frames") == "active"
    finally:
        await agent.close()


async def test_twenty_bad_frames_in_a_row_close_4002(server: ServerProcess, agent_key: str) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="garbage")
    for _ in range(20):
        await agent.send("garbage")
    assert await agent.closed_with() == 4002


async def test_a_reconnect_with_the_same_id_supersedes_the_old_socket(
    server: ServerProcess, agent_key: str
) -> None:
    first = await RawAgent.connect(server.ws_url, agent_key, agent_id="twin")
    second = await RawAgent.connect(server.ws_url, agent_key, agent_id="twin")
    try:
        assert await first.closed_with() == 4009
        assert (
            await agent_status(server, "twin") == "active"
        )  # the old socket's close does not take it offline
    finally:
        await second.close()


async def test_drain_tells_the_agent_and_takes_it_out_of_routing(
    server: ServerProcess, agent_key: str
) -> None:
    drained = await RawAgent.connect(server.ws_url, agent_key, agent_id="drainee", capabilities=["drain-cap"])
    try:
        async with server.async_client() as client:
            response = await client.post("/api/v1/agents/drainee/drain")
            assert response.status_code == 200
            assert response.json()["status"] == "draining"
            assert (await drained.expect("drain"))["type"] == "drain"
            task = (
                await client.post("/api/v1/tasks", json={"type": "t", "capabilities": ["drain-cap"]})
            ).json()
            # A second capable agent arrives; the work goes to it, never to the draining one.
            fresh = await RawAgent.connect(
                server.ws_url, agent_key, agent_id="fresh", capabilities=["drain-cap"]
            )
            try:
                assign = await fresh.expect("assign")
                assert assign["task_id"] == task["id"]
                await fresh.complete(assign)
            finally:
                await fresh.close()
            assert not [f for f in drained.backlog if f["type"] == "assign"]
            done = (await client.get(f"/api/v1/tasks/{task['id']}", params={"wait": 10})).json()
            assert done["agent_id"] == "fresh"
    finally:
        await drained.close()


async def test_a_drain_lasts_until_the_agent_says_goodbye(server: ServerProcess, agent_key: str) -> None:
    """A lost socket (or a replica declared dead) does not end a drain: the agent reconnects draining and is
    told so again. Its own clean close (1000) does: it comes back active."""

    async def status(client: Any) -> str:
        return str((await client.get("/api/v1/agents/stays-drained")).json()["status"])

    async def offline(client: Any) -> bool | None:
        return await status(client) == "offline" or None

    async def connect() -> RawAgent:
        return await RawAgent.connect(
            server.ws_url, agent_key, agent_id="stays-drained", capabilities=["stay"]
        )

    agent = await connect()
    async with server.async_client() as client:
        assert (await client.post("/api/v1/agents/stays-drained/drain")).status_code == 200
        await agent.expect("drain")
        agent.ws.transport.abort()  # lost, not closed: no goodbye
        await eventually_async(lambda: offline(client), timeout=10)

        again = await RawAgent.connect(
            server.ws_url, agent_key, agent_id="stays-drained", capabilities=["stay"]
        )
        assert (await again.expect("drain"))["type"] == "drain"
        assert await status(client) == "draining"
        await again.close()  # goodbye: the drain is over
        await eventually_async(lambda: offline(client), timeout=10)

        third = await RawAgent.connect(
            server.ws_url, agent_key, agent_id="stays-drained", capabilities=["stay"]
        )
        try:
            assert await status(client) == "active"
        finally:
            await third.close()


async def test_deregister_closes_the_socket_and_forgets_the_agent(
    server: ServerProcess, agent_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="leaver")
    async with server.async_client() as client:
        assert (await client.delete("/api/v1/agents/leaver")).status_code == 204
        assert await agent.closed_with() == 4011
        assert (await client.get("/api/v1/agents/leaver")).status_code == 404
        assert (await client.delete("/api/v1/agents/leaver")).status_code == 404


async def test_disconnect_is_offline_within_a_second(server: ServerProcess, agent_key: str) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="quitter")
    assert await agent_status(server, "quitter") == "active"
    await agent.close()
    started = time.monotonic()

    async def offline() -> bool:
        return await agent_status(server, "quitter") == "offline"

    await eventually_async(offline, timeout=1.0, interval=0.02)
    assert time.monotonic() - started <= 1.0


async def test_an_agent_that_stops_answering_pings_becomes_unhealthy_and_recovers(
    server: ServerProcess, agent_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="sleepy")
    try:
        # Say nothing: three missed pings (0.5 s apart) mark it unhealthy.
        async def unhealthy() -> bool:
            return await agent_status(server, "sleepy") == "unhealthy"

        await eventually_async(unhealthy, timeout=10)
        async with server.async_client() as client:
            detail = (await client.get("/api/v1/agents/sleepy")).json()
        assert detail["health_failures"] >= 3
        assert detail["health_checks"][0]["ok"] is False

        # Answer again: the next successful check brings it back.
        agent.backlog.clear()
        while True:
            frame = await agent.recv()
            if frame["type"] == "ping":
                await agent.send({"type": "pong", "nonce": frame["nonce"]})
                if await agent_status(server, "sleepy") == "active":
                    break
    finally:
        await agent.close()


async def test_an_agent_key_cannot_take_over_another_keys_agent(
    server: ServerProcess, agent_key: str
) -> None:
    owner = await RawAgent.connect(server.ws_url, agent_key, agent_id="owned-1")
    other_key = server.create_key("agent", name="intruder")
    try:
        intruder = await RawAgent.connect(server.ws_url, other_key, register=False)
        await intruder.send(
            {"type": "register", "agent_id": "owned-1", "model": "gpt-4", "capabilities": [{"name": "x"}]}
        )
        assert await intruder.closed_with() == 4001
        assert await agent_status(server, "owned-1") == "active"
        # The owner's own reconnect still supersedes its old socket.
        again = await RawAgent.connect(server.ws_url, agent_key, agent_id="owned-1")
        assert await owner.closed_with() == 4009
        await again.close()
    finally:
        await owner.close()
