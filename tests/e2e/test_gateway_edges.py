"""Bad input on /ws/agents costs only itself: poison results (NUL, depth, usage beyond its bounds), NUL in
frames, lax types, an unsupported protocol, a revoked key. Real server, real sockets, raw frames. (What the
database itself refuses: tests/e2e/test_gateway_transient.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.polling import eventually_async
from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent

SERVER_ENV = {"AGENT_HEALTH_CHECK_INTERVAL": "30s", "AGENT_MAX_ATTEMPTS": "1"}


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="edge-agents")


async def finished(server: ServerProcess, task_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await server.task(task_id)
        return body if body["status"] in {"succeeded", "failed", "cancelled", "timed_out"} else None

    body = await eventually_async(check)
    assert body is not None
    return body


def result(assign: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "result", "assignment_id": assign["assignment_id"], "status": "succeeded", **fields}


POISON: dict[str, tuple[dict[str, Any], str]] = {
    "nul in an output value": ({"output": {"text": "a\u0000b"}}, "output.text"),
    "nul in an output key": ({"output": {"k\u0000": 1}}, "output"),
    "nul in the error message": (
        {"status": "failed", "error": {"code": "boom", "message": "bad\u0000"}},
        "error.message",
    ),
    "tokens of 2**63": ({"usage": {"input_tokens": 2**63, "output_tokens": 0}}, "usage.input_tokens"),
    "tokens over 2**53": ({"usage": {"input_tokens": 0, "output_tokens": 2**53 + 1}}, "usage.output_tokens"),
    "cost over 1e9": ({"usage": {"input_tokens": 1, "cost": 1e9 + 1}}, "usage.cost"),
    "cost of 1e308": ({"usage": {"cost": 1e308}}, "usage.cost"),
    "output nested too deep": ({"output": json.loads("[" * 100 + "]" * 100)}, "nested deeper"),
}


@pytest.mark.parametrize("case", list(POISON))
async def test_a_poison_result_fails_its_task_and_the_agents_other_tasks_succeed(
    server: ServerProcess, agent_key: str, case: str
) -> None:
    fields, named = POISON[case]
    capability = f"poison-{abs(hash(case)) % 10**8}"
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=[capability], max_concurrency=3)
    try:
        task_ids = await server.submit_batch(capability, 3)
        assigns = [await agent.expect("assign") for _ in task_ids]
        poisoned, *others = assigns
        await agent.send(result(poisoned, **fields))
        error = await agent.expect("error")
        assert error["code"] == "invalid_result"
        assert error["ref"] == poisoned["assignment_id"]
        assert named in error["message"]
        ack = await agent.expect("ack")  # the failure recorded in its place is acknowledged: no resending
        assert ack["assignment_id"] == poisoned["assignment_id"]
        for assign in others:
            await agent.complete(assign)
        failed = await finished(server, poisoned["task_id"])
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "invalid_result"
        assert named in failed["error"]["message"]
        for assign in others:
            assert (await finished(server, assign["task_id"]))["status"] == "succeeded"
    finally:
        await agent.close()


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "progress", "progress": 0.5, "message": "x\u0000"}, "message"),
        ({"type": "reject", "reason": "no\u0000"}, "reason"),
    ],
)
async def test_nul_in_progress_or_reject_is_refused_naming_the_field_and_assignment(
    server: ServerProcess, agent_key: str, frame: dict[str, Any], field: str
) -> None:
    capability = f"nul-{frame['type']}"
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=[capability])
    try:
        (task_id,) = await server.submit_batch(capability, 1)
        assign = await agent.expect("assign")
        await agent.send({**frame, "assignment_id": assign["assignment_id"]})
        error = await agent.expect("error")
        assert error["code"] == "invalid_message"
        assert error["ref"] == assign["assignment_id"]
        assert field in error["message"]
        await agent.complete(assign)  # the socket and the assignment are fine
        assert (await finished(server, task_id))["status"] == "succeeded"
    finally:
        await agent.close()


@pytest.mark.parametrize(
    "register",
    [
        {"name": "bad\u0000name"},
        {"model": "gpt\u00004"},
        {"capabilities": [{"name": "x", "version": "1\u0000"}]},
        {"capabilities": [{"name": "x", "parameters": {"a": ["\u0000"]}}]},
        {"capabilities": [{"name": "x", "constraints": {"k\u0000": 1}}]},
    ],
)
async def test_nul_in_register_gets_an_error_frame_and_a_good_register_still_works(
    server: ServerProcess, agent_key: str, register: dict[str, Any]
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, register=False)
    try:
        frame = {"type": "register", "model": "gpt-4", "capabilities": [{"name": "x"}], **register}
        await agent.send(frame)
        error = await agent.recv()
        assert (error["type"], error["code"]) == ("error", "invalid_message")
        assert "NUL" in error["message"]
        await agent.send({"type": "register", "model": "gpt-4", "capabilities": [{"name": "x"}]})
        assert (await agent.recv())["type"] == "registered"
    finally:
        await agent.close()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "register", "model": "gpt-4", "capabilities": [{"name": "x"}], "max_concurrency": "4"},
        {"type": "register", "model": "gpt-4", "capabilities": [{"name": "x"}], "max_concurrency": True},
        {"type": "register", "model": "gpt-4", "capabilities": [{"name": "x"}], "max_concurrency": 4.0},
        {"type": "register", "model": "gpt-4", "capabilities": [{"name": "x"}], "protocol": "1"},
        {"type": "register", "model": 4, "capabilities": [{"name": "x"}]},
    ],
)
async def test_register_types_are_strict(
    server: ServerProcess, agent_key: str, frame: dict[str, Any]
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, register=False)
    try:
        await agent.send(frame)
        error = await agent.recv()
        assert (error["type"], error["code"]) == ("error", "invalid_message")
    finally:
        await agent.close()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "heartbeat", "active": True},
        {"type": "heartbeat", "active": "2"},
        {"type": "progress", "assignment_id": "6f1e2b8a-0000-4000-8000-000000000000", "progress": "0.5"},
        {"type": "progress", "assignment_id": "6f1e2b8a-0000-4000-8000-000000000000", "progress": False},
        {
            "type": "result",
            "assignment_id": "6f1e2b8a-0000-4000-8000-000000000000",
            "status": "failed",
            "error": {"code": "x", "retryable": "yes"},
        },
    ],
)
async def test_frame_types_are_strict_after_register(
    server: ServerProcess, agent_key: str, frame: dict[str, Any]
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key)
    try:
        await agent.send(frame)
        error = await agent.expect("error")
        assert error["code"] == "invalid_message"
    finally:
        await agent.close()


async def test_an_unsupported_protocol_version_is_closed_4004(server: ServerProcess, agent_key: str) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, register=False)
    await agent.send({"type": "register", "model": "gpt-4", "capabilities": [{"name": "x"}], "protocol": 2})
    assert await agent.closed_with() == 4004


async def test_revoking_a_key_closes_its_sockets_within_the_cache_window(server: ServerProcess) -> None:
    async with server.async_client() as client:
        created = (await client.post("/api/v1/keys", json={"name": "doomed", "scopes": ["agent"]})).json()
    doomed = await RawAgent.connect(server.ws_url, created["secret"], capabilities=["doomed"])
    other_key = server.create_key("agent", name="survivor")
    survivor = await RawAgent.connect(server.ws_url, other_key, capabilities=["doomed"])
    try:
        async with server.async_client() as client:
            assert (await client.delete(f"/api/v1/keys/{created['id']}")).status_code == 200
        assert await doomed.closed_with(timeout=5) == 4001
        # The other key's agent keeps its socket and its work.
        (task_id,) = await server.submit_batch("doomed", 1)
        await survivor.complete(await survivor.expect("assign"))
        assert (await finished(server, task_id))["status"] == "succeeded"
    finally:
        await survivor.close()
