"""The fleet as an A2A agent, called through the official a2a-sdk client (A2A 1.0, and 0.3 on the same
endpoint) against a real server process whose real SDK agents do the work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from google.protobuf import json_format, struct_pb2

from tests.support.agents import AgentFleet
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

AGENTS = ["a2a-agent-1", "a2a-agent-2"]


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFleet]:
    agents = AgentFleet(server, server.create_key("agent"), tmp_path_factory.mktemp("agents"))
    for agent_id in AGENTS:
        agents.start(agent_id, ["sleep", "text"])
    agents.wait_active()
    yield agents
    agents.stop()


@pytest.fixture(scope="module")
def client_key(server: ServerProcess) -> str:
    return server.create_key("client", name="a2a-client")


@asynccontextmanager
async def a2a_client(
    server: ServerProcess, key: str, *, streaming: bool = True, version: str = "1.0"
) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        card: AgentCard = await A2ACardResolver(http, server.base_url).get_agent_card()
        # The card offers 1.0 and 0.3 on one endpoint; keeping one makes the client speak that version.
        interfaces = [i for i in card.supported_interfaces if i.protocol_version == version]
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(interfaces)
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)
        try:
            yield client
        finally:
            await client.close()


def message(capability: str, payload: dict[str, Any], task_type: str | None = None) -> SendMessageRequest:
    metadata = struct_pb2.Struct()
    metadata.update({"capability": capability} | ({"task_type": task_type} if task_type else {}))
    data = json_format.ParseDict(payload, struct_pb2.Value())
    sent = Message(
        message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(data=data)], metadata=metadata
    )
    return SendMessageRequest(message=sent)


def artifact_data(task: Task) -> Any:
    [artifact] = task.artifacts
    [part] = artifact.parts
    return json_format.MessageToDict(part.data)


async def test_the_agent_card_lists_the_fleets_capabilities_and_asks_for_a_bearer_key(
    server: ServerProcess, fleet: AgentFleet
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
        unauthorized = await http.post("/a2a/jsonrpc", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask"})
    assert {"sleep", "text"} <= {skill["id"] for skill in card["skills"]}
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "bearer"
    assert {(i["protocolBinding"], i["protocolVersion"]) for i in card["supportedInterfaces"]} == {
        ("JSONRPC", "1.0"),
        ("JSONRPC", "0.3"),
    }
    assert card["url"] == f"{server.base_url}/a2a/jsonrpc"  # the 0.3 layout, for 0.3 clients
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"].startswith("Bearer ")


async def test_streams_status_updates_and_the_result_of_our_own_task(
    server: ServerProcess, fleet: AgentFleet, client_key: str
) -> None:
    async with a2a_client(server, client_key) as client:
        events: list[StreamResponse] = [
            event async for event in client.send_message(message("sleep", {"ms": 1500}))
        ]
    first = events[0]
    assert first.HasField("task")
    task_id = first.task.id
    assert first.task.status.state == TaskState.TASK_STATE_SUBMITTED

    updates = [event.status_update for event in events if event.HasField("status_update")]
    assert all(update.task_id == task_id for update in updates)
    progress = [json_format.MessageToDict(u.metadata).get("progress") for u in updates]
    assert len([value for value in progress if value is not None]) >= 3, progress
    assert TaskState.TASK_STATE_WORKING in {update.status.state for update in updates}
    assert updates[-1].status.state == TaskState.TASK_STATE_COMPLETED

    [artifact] = [event.artifact_update for event in events if event.HasField("artifact_update")]
    assert json_format.MessageToDict(artifact.artifact.parts[0].data) == {"slept_ms": 1500}

    # The A2A task is our task: the same id, through REST too.
    ours = await server.task(task_id)
    assert ours["status"] == "succeeded"
    assert ours["result"] == {"slept_ms": 1500}


@pytest.mark.parametrize("version", ["1.0", "0.3"])
async def test_a_blocking_send_returns_the_result_and_get_task_reads_it(
    server: ServerProcess, fleet: AgentFleet, client_key: str, version: str
) -> None:
    async with a2a_client(server, client_key, streaming=False, version=version) as client:
        [answer] = [
            event
            async for event in client.send_message(message("text", {"lines": ["a b", "b"]}, "word-count"))
        ]
        assert answer.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert artifact_data(answer.task) == {"a": 1, "b": 2}
        assert json_format.MessageToDict(answer.task.metadata)["type"] == "word-count"

        read = await client.get_task(GetTaskRequest(id=answer.task.id))
        assert read.status.state == TaskState.TASK_STATE_COMPLETED
        assert artifact_data(read) == {"a": 1, "b": 2}


async def test_cancels_a_task_and_other_keys_cannot_see_it(
    server: ServerProcess, fleet: AgentFleet, client_key: str
) -> None:
    request = message("sleep", {"ms": 60_000})
    request.configuration.return_immediately = True
    async with a2a_client(server, client_key, streaming=False) as client:
        [answer] = [event async for event in client.send_message(request)]
        task_id = answer.task.id
        assert answer.task.status.state in {TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING}
        cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert (await server.task(task_id))["status"] == "cancelled"

    other_key = server.create_key("client", name="a2a-other")
    rpc = {"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": task_id}}
    hello = {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hello"}]}
    unnamed = {**rpc, "method": "SendMessage", "params": {"message": hello}}
    version = {"A2A-Version": "1.0"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=version, timeout=30) as http:
        hidden = await http.post("/a2a/jsonrpc", json=rpc, headers={"Authorization": f"Bearer {other_key}"})
        refused = await http.post(
            "/a2a/jsonrpc", json=unnamed, headers={"Authorization": f"Bearer {client_key}"}
        )
    assert hidden.json()["error"]["code"] == -32001  # TaskNotFoundError
    assert "no task with id" in hidden.json()["error"]["message"]
    assert refused.json()["error"]["code"] == -32602  # invalid params, in a sentence
    assert "message.metadata.capability" in refused.json()["error"]["message"]
