"""The MCP server at /mcp, driven by the official MCP client over a real port against a real server process,
with real SDK agents doing the work. Both eras: the current protocol (no handshake) and the 2025-11-25
initialize handshake."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent, TextResourceContents

from tests.support.agents import AgentFleet
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

AGENTS = ["mcp-agent-1", "mcp-agent-2"]
MODES = {"auto": "2026-07-28", "legacy": "2025-11-25"}


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFleet]:
    agents = AgentFleet(server, server.create_key("agent"), tmp_path_factory.mktemp("agents"))
    for agent_id in AGENTS:
        agents.start(agent_id, ["text", "sleep"])
    agents.wait_active()
    yield agents
    agents.stop()


@pytest.fixture(scope="module")
def client_key(server: ServerProcess) -> str:
    return server.create_key("client", name="mcp-client")


@asynccontextmanager
async def connect(server: ServerProcess, key: str, mode: str = "auto") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
        transport = streamable_http_client(f"{server.base_url}/mcp", http_client=http)
        async with Client(transport, mode=mode) as client:  # type: ignore[arg-type]
            assert client.protocol_version == MODES[mode]
            yield client


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    [content] = result.content
    assert isinstance(content, TextContent)
    assert "Traceback" not in content.text
    return content.text


@pytest.mark.parametrize("mode", list(MODES))
async def test_lists_agents_and_runs_a_task_reporting_progress(
    server: ServerProcess, fleet: AgentFleet, client_key: str, mode: str
) -> None:
    async with connect(server, client_key, mode) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools == {
            "list_agents", "submit_task", "get_task", "cancel_task", "start_session", "get_session",
            "registry_metrics", "usage",
        }  # fmt: skip

        listed = structured(await client.call_tool("list_agents", {"capability": "sleep"}))
        assert {agent["id"] for agent in listed["items"]} == set(AGENTS)
        assert (
            structured(await client.call_tool("list_agents", {"capability": "nobody-has-it"}))["items"] == []
        )

        progress: list[tuple[float, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            assert total == 1.0
            progress.append((value, message))

        arguments = {"type": "sleep", "capabilities": ["sleep"], "payload": {"ms": 1500}, "timeout_s": 60}
        done = structured(await client.call_tool("submit_task", arguments, progress_callback=on_progress))
        assert done["status"] == "succeeded", done
        assert done["done"] is True
        assert done["note"] is None
        assert done["result"] == {"slept_ms": 1500}
        assert done["agent_id"] in AGENTS

        # The demo agent reports ten steps; each one recorded before the result reached the client.
        assert len(progress) >= 3, progress
        values = [value for value, _ in progress]
        assert values == sorted(values)
        assert values[0] > 0
        assert values[-1] <= 1.0
        assert all(message and message.startswith("slept ") for _, message in progress)

        read = structured(await client.call_tool("get_task", {"task_id": done["task_id"]}))
        assert read["status"] == "succeeded"
        assert read["result"] == {"slept_ms": 1500}

        usage = structured(await client.call_tool("usage", {"group_by": "task_type"}))
        assert "sleep" in {row["key"] for row in usage["items"]}
        metrics = structured(await client.call_tool("registry_metrics", {}))
        assert metrics["total_agents"] >= len(AGENTS)


async def test_a_wait_that_runs_out_returns_the_task_id_to_poll(
    server: ServerProcess, fleet: AgentFleet, client_key: str
) -> None:
    async with connect(server, client_key) as client:
        arguments = {"type": "sleep", "capabilities": ["sleep"], "payload": {"ms": 3000}, "timeout_s": 0.5}
        open_task = structured(await client.call_tool("submit_task", arguments))
        assert open_task["done"] is False
        assert open_task["status"] in {"pending", "assigned", "running"}
        assert open_task["task_id"] in open_task["note"]
        polled = structured(
            await client.call_tool("get_task", {"task_id": open_task["task_id"], "wait_s": 30})
        )
        assert polled["status"] == "succeeded"
        assert polled["result"] == {"slept_ms": 3000}


@pytest.mark.parametrize("mode", list(MODES))
async def test_cancels_a_task_and_reads_its_events(
    server: ServerProcess, fleet: AgentFleet, client_key: str, mode: str
) -> None:
    async with connect(server, client_key, mode) as client:
        arguments = {"type": "sleep", "capabilities": ["sleep"], "payload": {"ms": 60_000}, "wait": False}
        submitted = structured(await client.call_tool("submit_task", arguments))
        task_id = submitted["task_id"]
        assert submitted["done"] is False

        cancelled = structured(await client.call_tool("cancel_task", {"task_id": task_id}))
        assert cancelled["status"] == "cancelled"
        assert cancelled["done"] is True
        assert "already cancelled" in error_text(await client.call_tool("cancel_task", {"task_id": task_id}))

        [contents] = (await client.read_resource(f"agentplane://tasks/{task_id}/events")).contents
        assert isinstance(contents, TextResourceContents)
        events = json.loads(contents.text)
        assert [event["to"] for event in events if event["kind"] == "transition"][-1] == "cancelled"
        assert events[0]["to"] == "pending"

        [index] = (await client.read_resource("agentplane://capabilities")).contents
        assert isinstance(index, TextResourceContents)
        by_name = {item["name"]: item for item in json.loads(index.text)["items"]}
        assert set(AGENTS) <= set(by_name["sleep"]["agents"])


async def test_starts_a_map_reduce_session_and_reads_its_result(
    server: ServerProcess, fleet: AgentFleet, client_key: str
) -> None:
    lines = [f"alpha beta w{n % 7}" for n in range(40)]
    async with connect(server, client_key) as client:
        arguments = {
            "strategy": "map_reduce", "task_type": "word-count", "capabilities": ["text"],
            "payload": {"lines": lines},
            "params": {"split_field": "lines", "chunk_size": 10, "reducer": "sum"},
        }  # fmt: skip
        started = structured(await client.call_tool("start_session", arguments))
        assert started["strategy"] == "map_reduce"
        assert started["status"] == "running"

        ended = structured(await client.call_tool("get_session", {"session_id": started["id"], "wait_s": 60}))
        assert ended["status"] == "succeeded", ended["error"]
        assert ended["result"] == dict(Counter(word for line in lines for word in line.split()))
        assert len(ended["subtasks"]) == 4


async def test_tool_errors_are_sentences_and_keys_see_only_their_own(
    server: ServerProcess, fleet: AgentFleet, client_key: str
) -> None:
    other_key = server.create_key("client", name="someone-else")
    async with connect(server, client_key) as client:
        bad = {"type": "sleep", "capabilities": [], "payload": {}}
        assert "capabilities" in error_text(await client.call_tool("submit_task", bad))
        missing = "00000000-0000-0000-0000-000000000000"
        assert f"no task with id {missing}" in error_text(
            await client.call_tool("get_task", {"task_id": missing})
        )
        assert "task_id" in error_text(await client.call_tool("get_task", {"task_id": "not-a-uuid"}))
        no_split = {"strategy": "map_reduce", "task_type": "word-count", "capabilities": ["text"]}
        assert "split_field" in error_text(await client.call_tool("start_session", no_split))

        arguments = {"type": "echo", "capabilities": ["text"], "payload": {"x": 1}, "wait": False}
        mine = structured(await client.call_tool("submit_task", arguments))["task_id"]
    async with connect(server, other_key) as other:
        assert "no task with id" in error_text(await other.call_tool("get_task", {"task_id": mine}))


def test_without_a_client_key_the_answer_is_401_with_the_resource_metadata(
    server: ServerProcess, client_key: str
) -> None:
    initialize = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}},
    }  # fmt: skip
    accept = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=server.base_url, headers=accept, timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer ap_not_a_key"}):
            refused = http.post("/mcp", json=initialize, headers=headers)
            assert refused.status_code == 401
            assert refused.headers["content-type"] == "application/problem+json"
            challenge = refused.headers["www-authenticate"]
            metadata_url = f"{server.base_url}/.well-known/oauth-protected-resource/mcp"
            assert challenge.startswith("Bearer ")
            assert f'resource_metadata="{metadata_url}"' in challenge

        metadata = http.get("/.well-known/oauth-protected-resource/mcp").json()
        assert metadata["resource"] == f"{server.base_url}/mcp"
        assert metadata["scopes_supported"] == ["client"]

        agent_key = server.create_key("agent")
        assert (
            http.post("/mcp", json=initialize, headers={"Authorization": f"Bearer {agent_key}"}).status_code
            == 403
        )

        authorized = {"Authorization": f"Bearer {client_key}"}
        # Exactly /mcp, answered there (no redirect to /mcp/); a Host outside the allow-list (DNS rebinding)
        # is refused.
        opened = http.post("/mcp", json=initialize, headers=authorized)
        assert opened.status_code == 200, opened.text
        assert opened.headers["mcp-session-id"]
        rebound = http.post("/mcp", json=initialize, headers={**authorized, "Host": "evil.example"})
        assert rebound.status_code == 421
