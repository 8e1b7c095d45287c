"""Fuzzing /ws/agents with hypothesis while real agents work: malformed, oversized, deeply nested, NUL-laden,
binary and flooding frames, and frames naming other agents' assignments. The fuzzed socket may be refused or
closed (4002 after a run of bad frames, 1013 if it stops reading); the server must stay up and every
bystander's task must succeed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.agent_procs import AgentProcess
from tests.support.polling import eventually
from tests.support.server import ServerProcess

MAX_MESSAGE = 16384
SERVER_ENV = {"AGENT_MAX_MESSAGE_BYTES": str(MAX_MESSAGE), "AGENT_HEALTH_CHECK_INTERVAL": "2s"}
ALLOWED_CLOSES = {4002, 1009, 1013}
TYPES = ["register", "accept", "reject", "progress", "result", "pong", "drain", "heartbeat", "assign", "x"]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.just("\u0000"),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


class Fuzzer:
    """One raw agent socket, reopened (and re-registered) whenever the server closes it."""

    def __init__(self, server: ServerProcess, key: str) -> None:
        self.server = server
        self.key = key
        self.ws: ClientConnection | None = None
        self.closes: list[int | None] = []

    def socket(self) -> ClientConnection:
        if self.ws is None:
            headers = {"Authorization": f"Bearer {self.key}"}
            self.ws = connect(self.server.ws_url, additional_headers=headers, max_size=None, compression=None)
            register = {
                "type": "register",
                "agent_id": "fuzzer",
                "model": "fuzz",
                "capabilities": [{"name": "fuzz"}],
            }
            self.ws.send(json.dumps(register))
            assert json.loads(self.ws.recv(timeout=10))["type"] == "registered"
        return self.ws

    def send(self, batch: list[str | bytes]) -> None:
        """Send the frames, then read what the server answered; a close must carry an allowed code."""
        code: int | None = 0
        try:
            for frame in batch:
                self.socket().send(frame)
            while True:  # every answer must be a well-formed frame
                answer = json.loads(self.socket().recv(timeout=0.02))
                assert answer["type"] in {"error", "ack", "ping", "registered"}, answer
                if answer["type"] == "ping":
                    self.socket().send(json.dumps({"type": "pong", "nonce": answer["nonce"]}))
        except TimeoutError:
            return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
        assert code in ALLOWED_CLOSES, code
        self.closes.append(code)
        self.ws = None


def frames(assignments: list[str]) -> st.SearchStrategy[list[str | bytes]]:
    known = st.sampled_from(assignments) if assignments else st.just(str(uuid.uuid4()))
    assignment_id = st.one_of(known, st.uuids().map(str), st.text(max_size=40), st.integers())
    shaped = st.fixed_dictionaries(
        {"type": st.sampled_from(TYPES)},
        optional={
            "assignment_id": assignment_id,
            "status": st.sampled_from(["succeeded", "failed", "maybe"]),
            "output": json_value,
            "error": st.fixed_dictionaries({}, optional={"code": json_leaf, "message": json_leaf}),
            "usage": st.fixed_dictionaries(
                {}, optional={"input_tokens": json_leaf, "output_tokens": json_leaf}
            ),
            "progress": json_leaf,
            "message": json_leaf,
            "reason": json_leaf,
            "model": json_leaf,
            "capabilities": st.lists(st.fixed_dictionaries({"name": json_leaf}), max_size=3),
            "max_concurrency": json_leaf,
            "protocol": json_leaf,
            "nonce": json_leaf,
            "active": json_leaf,
        },
    ).map(json.dumps)
    other_agents_work = st.builds(
        lambda kind, assignment: json.dumps(
            {"type": kind, "assignment_id": assignment}
            | ({"status": "succeeded", "output": {"stolen": True}} if kind == "result" else {})
        ),
        st.sampled_from(["accept", "reject", "result"]),
        known,
    )
    one = st.one_of(
        shaped,
        other_agents_work,
        st.text(max_size=200),  # not JSON, mostly
        st.binary(max_size=200),
        st.integers(min_value=1, max_value=300).map(lambda depth: "[" * depth + "]" * depth),
        st.integers(min_value=1, max_value=300).map(lambda depth: '{"type":"result","output":' + "[" * depth),
        st.just(json.dumps({"type": "heartbeat", "pad": "x" * (MAX_MESSAGE + 10)})),  # oversized
        st.just('{"type":"progress","message":"\\u0000"}'),
    )
    flood = st.integers(min_value=50, max_value=400).map(lambda n: [json.dumps({"type": "heartbeat"})] * n)
    return st.one_of(st.lists(one, min_size=1, max_size=6), flood)


def is_active(client: httpx.Client, agent_id: str) -> bool:
    return bool(client.get(f"/api/v1/agents/{agent_id}").json().get("status") == "active")


@pytest.fixture(scope="module")
def bystanders(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    key = server.create_key("agent", name="bystanders")
    log_dir = tmp_path_factory.mktemp("bystanders")
    agents = [
        AgentProcess(server.ws_url, key, f"bystander-{n}", max_concurrency=8, log_dir=log_dir).start()
        for n in range(2)
    ]
    with server.client() as client:
        for agent in agents:
            eventually(partial(is_active, client, agent.agent_id), timeout=30)
    yield [agent.agent_id for agent in agents]
    for agent in agents:
        agent.stop()


def test_fuzzed_frames_cost_nobody_else_their_work(server: ServerProcess, bystanders: list[str]) -> None:
    with server.client() as client:
        batch = [{"type": "sleep", "capabilities": ["sleep"], "payload": {"ms": 800}}] * 160
        response = client.post("/api/v1/tasks:batch", json={"tasks": batch})
        assert response.status_code == 201, response.text
        task_ids = [task["id"] for task in response.json()["tasks"]]

        def held() -> list[str]:
            ids = []
            for task_id in task_ids[:24]:
                items = client.get(f"/api/v1/tasks/{task_id}/assignments").json()["items"]
                ids += [item["id"] for item in items]
            return ids

        assignments = eventually(held, timeout=15)
    fuzzer = Fuzzer(server, server.create_key("agent", name="fuzzer"))

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(batch=frames(assignments))
    def fuzz(batch: list[str | bytes]) -> None:
        fuzzer.send(batch)

    fuzz()
    with server.client() as client:
        assert client.get("/readyz").status_code == 200

        def all_done() -> list[dict[str, Any]] | None:
            tasks = [client.get(f"/api/v1/tasks/{task_id}").json() for task_id in task_ids]
            return (
                tasks
                if all(t["status"] in {"succeeded", "failed", "cancelled", "timed_out"} for t in tasks)
                else None
            )

        tasks = eventually(all_done, timeout=60, interval=0.5)
        assert tasks is not None
    assert [t["id"] for t in tasks if t["status"] != "succeeded"] == []
    # Each succeeded on a bystander's first attempt: no fuzzed frame moved anyone's task.
    assert {t["attempt"] for t in tasks} == {1}
