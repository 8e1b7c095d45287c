"""Nothing is lost: kill an agent holding work, kill the server mid-flight; every accepted task ends in
exactly one terminal state, done once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_procs import AgentProcess
from tests.support.polling import eventually
from tests.support.server import ServerProcess

SERVER_ENV = {"AGENT_HEALTH_CHECK_INTERVAL": "30s", "AGENTPLANE_REAPER_INTERVAL": "0.2s"}
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def agent_state(client: httpx.Client, agent_id: str) -> str | None:
    response = client.get(f"/api/v1/agents/{agent_id}")
    return str(response.json()["status"]) if response.status_code == 200 else None


def start_agent(
    server: ServerProcess,
    key: str,
    agent_id: str,
    agents: list[AgentProcess],
    tmp_path: Path,
    concurrency: int,
) -> AgentProcess:
    agent = AgentProcess(server.ws_url, key, agent_id, max_concurrency=concurrency, log_dir=tmp_path).start()
    agents.append(agent)
    with server.client() as client:
        eventually(lambda: agent_state(client, agent_id) == "active", timeout=30)
    return agent


def all_tasks(client: httpx.Client, task_type: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"type": task_type, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/tasks", params=params).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def assert_each_done_exactly_once(client: httpx.Client, task_ids: list[str]) -> None:
    for task_id in task_ids:
        task = client.get(f"/api/v1/tasks/{task_id}").json()
        assert task["status"] == "succeeded", task
        history = client.get(f"/api/v1/tasks/{task_id}/assignments").json()["items"]
        assert Counter(a["status"] for a in history)["succeeded"] == 1, history
        stream = client.get(f"/api/v1/tasks/{task_id}/events").text
        terminal = [line for line in stream.splitlines() if any(f'"to":"{s}"' in line for s in TERMINAL)]
        assert len(terminal) == 1, stream


def test_killing_an_agent_hands_its_tasks_to_another(
    server: ServerProcess, agents: list[AgentProcess], tmp_path: Path
) -> None:
    key = server.create_key("agent", name="crash-agents")
    doomed = start_agent(server, key, "doomed", agents, tmp_path, concurrency=10)
    with server.client() as client:
        body = {"tasks": [{"type": "sleep", "capabilities": ["sleep"], "payload": {"ms": 4000}}] * 10}
        task_ids = [t["id"] for t in client.post("/api/v1/tasks:batch", json=body).json()["tasks"]]

        def all_running_on_doomed() -> bool:
            tasks = [client.get(f"/api/v1/tasks/{t}").json() for t in task_ids]
            return all(t["status"] == "running" and t["agent_id"] == "doomed" for t in tasks)

        eventually(all_running_on_doomed, timeout=30)
        # In order, not raced: the doomed agent dies holding every task, the server gives them back to the
        # queue, and only then does the rescuer start (started first, on a busy machine it could register
        # after the doomed agent had finished its sleeps, and nothing would be handed over).
        doomed.kill()

        def all_back_in_the_queue() -> bool:
            tasks = [client.get(f"/api/v1/tasks/{t}").json() for t in task_ids]
            return agent_state(client, "doomed") == "offline" and all(t["status"] == "pending" for t in tasks)

        eventually(all_back_in_the_queue, timeout=60)
        start_agent(server, key, "rescuer", agents, tmp_path, concurrency=10)

        def all_terminal() -> bool:
            return all(client.get(f"/api/v1/tasks/{t}").json()["status"] in TERMINAL for t in task_ids)

        eventually(all_terminal, timeout=60)
        assert_each_done_exactly_once(client, task_ids)
        for task_id in task_ids:
            task = client.get(f"/api/v1/tasks/{task_id}").json()
            assert task["agent_id"] == "rescuer"
            history = client.get(f"/api/v1/tasks/{task_id}/assignments").json()["items"]
            assert [(a["agent_id"], a["status"]) for a in history] == [
                ("doomed", "lost"),
                ("rescuer", "succeeded"),
            ]
        assert agent_state(client, "doomed") == "offline"


def test_killing_the_server_mid_flight_loses_nothing(
    fresh_database_url: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    server = ServerProcess(fresh_database_url, env=dict(SERVER_ENV), log_dir=tmp_path).start()
    try:
        key = server.create_key("agent", name="survivors")
        for index in range(2):
            start_agent(server, key, f"survivor-{index}", agents, tmp_path, concurrency=8)
        with server.client() as client:
            body = {"tasks": [{"type": "sleep", "capabilities": ["sleep"], "payload": {"ms": 300}}] * 80}
            task_ids = [t["id"] for t in client.post("/api/v1/tasks:batch", json=body).json()["tasks"]]

            def some_done() -> bool:
                done = [t for t in all_tasks(client, "sleep") if t["status"] == "succeeded"]
                return 5 <= len(done) < len(task_ids)

            eventually(some_done, timeout=60, interval=0.02)
        server.kill()
        server.start()
        with server.client() as client:

            def all_terminal() -> bool:
                return all(t["status"] in TERMINAL for t in all_tasks(client, "sleep"))

            eventually(all_terminal, timeout=120, interval=0.2)
            assert len(all_tasks(client, "sleep")) == len(task_ids)
            assert_each_done_exactly_once(client, task_ids)
    finally:
        server.stop()
