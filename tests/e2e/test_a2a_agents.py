"""A2A agents inside the fleet: a stand-in A2A agent served by the official a2a-sdk server in its own process
(tests/support/a2a_standin.py: it counts words, streams its progress, honours CancelTask and journals what it
saw), registered through `POST /api/v1/agents/a2a` on a real server, beside a real WebSocket SDK agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support import sql
from tests.support.agents import PROJECT_ROOT, AgentFleet
from tests.support.child import ChildProcess
from tests.support.polling import eventually, eventually_async
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.e2e

TOKEN = "standin-secret-token-0123456789"
SERVER_ENV = {
    "AGENTPLANE_A2A_CREDENTIALS_KEY": Fernet.generate_key().decode(),
    # what an {"env": "AGENTPLANE_A2A_SECRET_STANDIN"} header reads on the server
    "AGENTPLANE_A2A_SECRET_STANDIN": f"Bearer {TOKEN}",
    "AGENT_HEALTH_CHECK_INTERVAL": "1",
    "AGENT_HEALTH_CHECK_TIMEOUT": "0.5",
}
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
WS_AGENT = "ws-word-counter"


class StandIn(ChildProcess):
    """The stand-in A2A agent's process, on a port that stays the same across restarts."""

    def __init__(self, log_dir: Path, token: str | None = TOKEN, *, streaming: bool = True) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.journal = log_dir / f"a2a-journal-{self.port}.jsonl"
        self.log_path = log_dir / f"a2a-standin-{self.port}.log"
        self.token = token
        self.streaming = streaming

    def start(self) -> StandIn:
        args = [sys.executable, "-m", "tests.support.a2a_standin", str(self.port), str(self.journal)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*args, *([self.token] if self.token else [])],
                cwd=PROJECT_ROOT,
                env={**os.environ, "STANDIN_STREAMING": "1" if self.streaming else "0"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}

        def up() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                return httpx.get(f"{self.base_url}/alive", headers=headers, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(up, timeout=20, interval=0.1)
        return self

    def entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.journal.read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def ws_agent(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFleet]:
    fleet = AgentFleet(server, server.create_key("agent"), tmp_path_factory.mktemp("agents"))
    fleet.start(WS_AGENT, ["text"], max_concurrency=2)
    fleet.wait_active()
    yield fleet
    fleet.stop()


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    agent = StandIn(tmp_path).start()
    yield agent
    agent.kill()


async def register(server: ServerProcess, card_url: str, **fields: Any) -> httpx.Response:
    async with server.async_client() as client:
        body = {"card_url": card_url, "max_concurrency": 2, **fields}
        return await client.post("/api/v1/agents/a2a", json=body)


async def agent(server: ServerProcess, agent_id: str) -> dict[str, Any]:
    async with server.async_client() as client:
        response = await client.get(f"/api/v1/agents/{agent_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def submit(server: ServerProcess, count: int, delay_ms: int, **fields: Any) -> list[str]:
    tasks = [
        {
            "type": "slow-word-count",
            "capabilities": ["text"],
            "payload": {"lines": ["one two three", f"four {n}"], "delay_ms": delay_ms},
            **fields,
        }
        for n in range(count)
    ]
    async with server.async_client() as client:
        response = await client.post("/api/v1/tasks:batch", json={"tasks": tasks})
    assert response.status_code == 201, response.text
    return [task["id"] for task in response.json()["tasks"]]


async def finished(server: ServerProcess, task_ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    async def all_done() -> list[dict[str, Any]] | None:
        tasks = [await server.task(task_id) for task_id in task_ids]
        return tasks if all(task["status"] in TERMINAL for task in tasks) else None

    return await eventually_async(all_done, timeout=timeout, interval=0.2)


async def terminal_events(database_url: str, task_ids: list[str]) -> dict[str, int]:
    """How many times each task entered a terminal state, in the record."""
    connection = await sql.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT task_id::text AS id, count(*) AS n FROM task_events"
            " WHERE task_id = ANY($1::uuid[]) AND to_status = ANY($2::text[]) GROUP BY task_id",
            task_ids,
            sorted(TERMINAL),
        )
    finally:
        await connection.close()
    return {row["id"]: row["n"] for row in rows}


async def test_an_a2a_agent_works_beside_a_websocket_agent_is_cancelled_and_survives_going_away(
    server: ServerProcess, database_url: str, ws_agent: AgentFleet, standin: StandIn
) -> None:
    # Registered by its base URL, with its credential given in clear (stored encrypted).
    response = await register(
        server, standin.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, model="standin-1"
    )
    assert response.status_code == 201, response.text
    registered = response.json()
    a2a_id = registered["id"]
    assert registered["transport"] == "a2a"
    assert registered["status"] == "active"
    assert registered["model"] == "standin-1"
    # The skill's id and its tags are capabilities; a tag that cannot be a capability name is left out.
    assert {cap["name"] for cap in registered["capabilities"]} == {"word-count", "text"}
    shown = await agent(server, a2a_id)
    assert shown["transport"] == "a2a"
    assert shown["max_concurrency"] == 2
    assert TOKEN not in response.text
    assert TOKEN not in json.dumps(shown)
    stored = await sql.fetchval(
        database_url, "SELECT headers::text FROM a2a_agents WHERE agent_id = $1", a2a_id
    )
    assert TOKEN not in stored
    assert '"enc"' in stored

    # Both agents get work, and the A2A agent's answers are recorded like any agent's.
    task_ids = await submit(server, 8, delay_ms=400)
    tasks = await finished(server, task_ids)
    assert {task["status"] for task in tasks} == {"succeeded"}
    by_agent = {task["agent_id"] for task in tasks}
    assert by_agent == {a2a_id, WS_AGENT}, by_agent
    a2a_tasks = [task for task in tasks if task["agent_id"] == a2a_id]
    assert all(task["result"] == {"words": 5} for task in a2a_tasks)
    seen = {entry["metadata"]["task_id"] for entry in standin.entries() if entry["event"] == "start"}
    assert {task["id"] for task in a2a_tasks} <= seen  # the agent itself saw them
    progress = await sql.fetchval(
        database_url,
        "SELECT count(*) FROM task_events WHERE task_id = ANY($1::uuid[]) AND kind = 'progress'",
        [task["id"] for task in a2a_tasks],
    )
    assert progress >= len(a2a_tasks) * 2  # its streamed status updates became progress
    assert (await agent(server, a2a_id))["metrics"]["tasks_completed"] == len(a2a_tasks)

    # Cancelling a task it runs reaches its CancelTask handler.
    [slow] = await submit(server, 1, delay_ms=60_000, agent_ids=[a2a_id])
    await eventually_async(lambda: _status_is(server, slow, "running"), timeout=15)
    async with server.async_client() as client:
        assert (await client.post(f"/api/v1/tasks/{slow}/cancel")).status_code == 200

    def cancel_seen() -> bool:
        entries = standin.entries()
        started = {
            e["a2a_task"] for e in entries if e["event"] == "start" and e["metadata"]["task_id"] == slow
        }
        return bool(started & {e["a2a_task"] for e in entries if e["event"] == "cancel"})

    eventually(cancel_seen, timeout=15, interval=0.1)
    assert (await server.task(slow))["status"] == "cancelled"

    # It goes away with work in hand: that work is requeued to the WebSocket agent, nothing lost.
    task_ids = await submit(server, 6, delay_ms=3000)

    async def a2a_running() -> bool:
        tasks = [await server.task(task_id) for task_id in task_ids]
        return any(t["agent_id"] == a2a_id and t["status"] == "running" for t in tasks)

    await eventually_async(a2a_running, timeout=15, interval=0.1)
    standin.kill()
    tasks = await finished(server, task_ids, timeout=90)
    assert {task["status"] for task in tasks} == {"succeeded"}, tasks
    assert {task["agent_id"] for task in tasks} == {WS_AGENT}
    assert any(task["attempt"] > 1 for task in tasks)  # some were taken back from the A2A agent
    counts = await terminal_events(database_url, task_ids + [slow])
    assert counts == {task_id: 1 for task_id in [*task_ids, slow]}
    gone = await agent(server, a2a_id)
    assert gone["status"] == "offline"

    # Back at the same address, it is attached again (the sweep) and takes work.
    standin.start()
    await eventually_async(lambda: _agent_status_is(server, a2a_id, "active"), timeout=20)
    [again] = await submit(server, 1, delay_ms=0, agent_ids=[a2a_id])
    [done] = await finished(server, [again])
    assert done["status"] == "succeeded"
    assert done["result"] == {"words": 5}


async def test_a_card_that_cannot_be_fetched_makes_the_agent_unhealthy_until_it_answers_again(
    server: ServerProcess, ws_agent: AgentFleet, standin: StandIn
) -> None:
    response = await register(server, f"{standin.base_url}/.well-known/agent-card.json", headers={
        "Authorization": {"env": "AGENTPLANE_A2A_SECRET_STANDIN"}
    })  # fmt: skip
    assert response.status_code == 201, response.text
    a2a_id = response.json()["id"]
    standin.kill()
    await eventually_async(lambda: _agent_status_is(server, a2a_id, "unhealthy"), timeout=20)
    checks = (await agent(server, a2a_id))["health_checks"]
    assert checks
    assert not checks[0]["ok"]
    standin.start()
    await eventually_async(lambda: _agent_status_is(server, a2a_id, "active"), timeout=20)


async def test_an_agent_whose_card_does_not_stream_is_polled(
    server: ServerProcess, database_url: str, tmp_path: Path
) -> None:
    standin = StandIn(tmp_path, streaming=False).start()
    try:
        response = await register(
            server, standin.base_url, headers={"Authorization": {"env": "AGENTPLANE_A2A_SECRET_STANDIN"}}
        )
        assert response.status_code == 201, response.text
        a2a_id = response.json()["id"]
        [task_id] = await submit(server, 1, delay_ms=1500, agent_ids=[a2a_id])
        [done] = await finished(server, [task_id])
        assert done["status"] == "succeeded"
        assert done["result"] == {"words": 5}
        progress = await sql.fetchval(
            database_url,
            "SELECT count(DISTINCT data::text) FROM task_events WHERE task_id = $1 AND kind = 'progress'",
            uuid.UUID(task_id),
        )
        assert progress >= 2  # the polled task's status messages, each once
    finally:
        standin.kill()


async def test_bad_registrations_are_field_level_problems(server: ServerProcess, tmp_path: Path) -> None:
    async def problem(body: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, Any]]:
        async with server.async_client(key) as client:
            response = await client.post("/api/v1/agents/a2a", json=body)
        assert response.headers["content-type"].startswith("application/problem+json"), response.text
        return response.status_code, response.json()

    def fields(answer: dict[str, Any]) -> set[str]:
        return {error["field"] for error in answer.get("errors") or []}

    closed = f"http://127.0.0.1:{free_port()}"
    status, answer = await problem({"card_url": closed, "max_concurrency": 1})
    assert (status, fields(answer)) == (422, {"card_url"}), answer
    assert "could not fetch the Agent Card" in answer["detail"]
    status, answer = await problem({"card_url": "ftp://example.com/card", "max_concurrency": 1})
    assert status == 422
    assert fields(answer) == {"card_url"}
    status, answer = await problem({"card_url": "http://user:pw@127.0.0.1/", "max_concurrency": 1})
    assert status == 422
    assert fields(answer) == {"card_url"}
    assert "pw" not in json.dumps(answer)
    status, answer = await problem({"card_url": closed})
    assert status == 422
    assert fields(answer) == {"max_concurrency"}
    status, answer = await problem({"card_url": closed, "max_concurrency": 0})
    assert status == 422
    assert fields(answer) == {"max_concurrency"}
    status, answer = await problem({"card_url": closed, "max_concurrency": 1, "headers": {"Bad Name": "x"}})
    assert status == 422
    assert any(field.startswith("headers.Bad Name") for field in fields(answer)), answer
    status, answer = await problem(
        {
            "card_url": closed,
            "max_concurrency": 1,
            "headers": {"X-Key": {"env": "AGENTPLANE_A2A_SECRET_NOT_SET"}},
        }
    )
    assert (status, fields(answer)) == (422, {"headers.X-Key"}), answer
    status, answer = await problem(
        {"card_url": closed, "max_concurrency": 1}, key=server.create_key("client")
    )
    assert status == 403


async def test_a_card_url_already_registered_is_a_conflict(server: ServerProcess, standin: StandIn) -> None:
    headers = {"Authorization": {"env": "AGENTPLANE_A2A_SECRET_STANDIN"}}
    first = await register(server, standin.base_url, headers=headers)
    assert first.status_code == 201, first.text
    again = await register(server, standin.base_url, headers=headers)
    assert again.status_code == 409, again.text
    async with server.async_client() as client:
        assert (await client.delete(f"/api/v1/agents/{first.json()['id']}")).status_code == 204
    # The deregistration took the stored registration with it: the URL is free again.
    assert (await register(server, standin.base_url, headers=headers)).status_code == 201


async def _status_is(server: ServerProcess, task_id: str, status: str) -> bool:
    return bool((await server.task(task_id))["status"] == status)


async def _agent_status_is(server: ServerProcess, agent_id: str, status: str) -> bool:
    return bool((await agent(server, agent_id))["status"] == status)


def test_the_stand_in_needs_its_token(tmp_path: Path) -> None:
    """The credential matters: without it the stand-in refuses the card (so the tests above exercise it)."""
    standin = StandIn(tmp_path).start()
    try:
        url = f"{standin.base_url}/.well-known/agent-card.json"
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 200
    finally:
        standin.kill()


async def test_the_registration_outlives_its_replica_restarted_or_gone(
    fresh_database_url: str, tmp_path: Path, standin: StandIn
) -> None:
    """Its replica re-attaches it after a crash and restart; when that replica is gone, another takes it."""
    a, b = (
        ServerProcess(fresh_database_url, env=dict(SERVER_ENV), log_dir=tmp_path).start() for _ in range(2)
    )
    try:
        response = await register(a, standin.base_url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 201, response.text
        a2a_id = response.json()["id"]

        async def held_by(server: ServerProcess) -> bool:
            shown = await agent(b, a2a_id)
            return bool(shown["status"] == "active" and shown["replica_id"] == f"test-{server.port}")

        assert await held_by(a)
        a.kill()  # a crash: its row in `replicas` stays until the others time it out (20 s)
        a.start()
        await eventually_async(lambda: held_by(a), timeout=20)
        a.stop()  # a clean stop leaves `replicas`: the other replica takes the agent over at its next sweep
        await eventually_async(lambda: held_by(b), timeout=20)
        [task_id] = await submit(b, 1, delay_ms=0, agent_ids=[a2a_id])
        [done] = await finished(b, [task_id])
        assert done["status"] == "succeeded"
        assert done["result"] == {"words": 5}
    finally:
        a.kill()
        b.kill()


async def test_an_a2a_agent_is_health_checked_as_it_registers(
    fresh_database_url: str, tmp_path: Path, standin: StandIn
) -> None:
    """As a socket agent is: its first check does not wait for the next round (an hour away here)."""
    env = {**SERVER_ENV, "AGENT_HEALTH_CHECK_INTERVAL": "3600"}
    server = ServerProcess(fresh_database_url, env=env, log_dir=tmp_path).start()
    try:
        response = await register(server, standin.base_url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 201, response.text
        a2a_id = response.json()["id"]

        async def checked() -> dict[str, Any] | None:
            shown = await agent(server, a2a_id)
            return shown if shown["health_checks"] else None

        shown = await eventually_async(checked, timeout=10)
        assert shown["health_checks"][0]["ok"] is True
        assert shown["last_health_check_at"] is not None
    finally:
        server.kill()


async def test_a_credentials_key_rotation_reseals_stored_headers_as_agents_are_attached(
    fresh_database_url: str, tmp_path: Path, standin: StandIn
) -> None:
    """With the new key listed first and the old after it, the replica that attaches the agent seals its
    headers with the new key; after that the old key can go and the agent still answers."""
    old_key = SERVER_ENV["AGENTPLANE_A2A_CREDENTIALS_KEY"]
    new_key = Fernet.generate_key().decode()

    def server(key: str) -> ServerProcess:
        env = {**SERVER_ENV, "AGENTPLANE_A2A_CREDENTIALS_KEY": key}
        return ServerProcess(fresh_database_url, env=env, log_dir=tmp_path).start()

    async def active_on(replica: ServerProcess, agent_id: str) -> bool:
        shown = await agent(replica, agent_id)
        return bool(shown["status"] == "active" and shown["replica_id"] == f"test-{replica.port}")

    first = server(old_key)
    try:
        response = await register(first, standin.base_url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 201, response.text
        a2a_id = response.json()["id"]
    finally:
        first.stop()  # a clean stop: the next replica takes the agent over and attaches it
    rotating = server(f"{new_key},{old_key}")
    try:
        await eventually_async(lambda: active_on(rotating, a2a_id), timeout=30)
    finally:
        rotating.stop()
    stored = await sql.fetchval(
        fresh_database_url, "SELECT headers FROM a2a_agents WHERE agent_id = $1", a2a_id
    )
    token = json.loads(stored)["Authorization"]["enc"]
    assert Fernet(new_key.encode()).decrypt(token.encode()).decode() == f"Bearer {TOKEN}"

    last = server(new_key)  # the old key is gone
    try:
        await eventually_async(lambda: active_on(last, a2a_id), timeout=30)
        [task_id] = await submit(last, 1, delay_ms=0, agent_ids=[a2a_id])
        [done] = await finished(last, [task_id])
        assert done["status"] == "succeeded"
    finally:
        last.kill()


async def test_one_bad_http_answer_fails_that_task_and_not_the_agent(
    server: ServerProcess, standin: StandIn
) -> None:
    """The agent answers one call with HTTP 500: that task fails (retryable) and the agent stays connected
    and keeps working; only a transport error (it is unreachable) takes the agent offline."""
    response = await register(server, standin.base_url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 201, response.text
    a2a_id = response.json()["id"]
    try:
        async with server.async_client() as client:
            body = {
                "type": "slow-word-count",
                "capabilities": ["text"],
                "payload": {"lines": ["a b"], "delay_ms": 0, "http_500": True},
                "agent_ids": [a2a_id],
                "max_attempts": 1,
            }
            poisoned = (await client.post("/api/v1/tasks", json=body)).json()["id"]
        [failed] = await finished(server, [poisoned])
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "a2a_error"
        assert (await agent(server, a2a_id))["status"] in {"active", "busy"}
        [after] = await finished(server, await submit(server, 1, delay_ms=0, agent_ids=[a2a_id]))
        assert after["status"] == "succeeded"
        assert after["agent_id"] == a2a_id
    finally:
        async with server.async_client() as client:
            await client.delete(f"/api/v1/agents/{a2a_id}")
