"""Ownership over a real server: a client key sees, waits on, streams, lists and cancels only its own (or
its project's) tasks and sessions; anyone else's are 404; admins see everything; idempotency keys are per
owner."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentplane.client import Client
from tests.support.agent_procs import AgentProcess
from tests.support.polling import eventually
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

NOBODY_CAN = {"type": "waits", "capabilities": ["no-agent-has-this"], "payload": {}}
SESSION = {
    "strategy": "map_reduce",
    "task": {"type": "count", "capabilities": ["no-agent-has-this"], "payload": {"items": [1, 2, 3]}},
    "params": {"split_field": "items", "chunk_size": 2, "reducer": "sum"},
}


@dataclass
class Keys:
    alice: str  # client, no project
    bob: str  # client, no project
    team_1: str  # client, project "team"
    team_2: str  # client, project "team"
    admin: str  # an admin key from the API (not the environment's)
    agent: str


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> Keys:
    def create(name: str, scope: str, project: str | None = None) -> str:
        body: dict[str, Any] = {"name": name, "scopes": [scope]}
        if project:
            body["project"] = project
        with server.client() as api:
            response = api.post("/api/v1/keys", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["project"] == project
        return str(response.json()["secret"])

    return Keys(
        alice=create("alice", "client"),
        bob=create("bob", "client"),
        team_1=create("team-1", "client", "team"),
        team_2=create("team-2", "client", "team"),
        admin=create("ops", "admin"),
        agent=create("worker", "agent"),
    )


@pytest.fixture
def as_key(server: ServerProcess) -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def open_client(key: str) -> httpx.Client:
        clients.append(server.client(key))
        return clients[-1]

    yield open_client
    for client in clients:
        client.close()


def submit(api: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = api.post("/api/v1/tasks", json={**NOBODY_CAN, **extra})
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def listed(api: httpx.Client, path: str, **params: Any) -> set[str]:
    response = api.get(path, params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def assert_hidden(api: httpx.Client, kind: str, item_id: str) -> None:
    """Every route naming the item answers 404, exactly as for an id that does not exist."""
    routes = [("GET", f"/api/v1/{kind}/{item_id}"), ("GET", f"/api/v1/{kind}/{item_id}?wait=1")]
    routes += [("GET", f"/api/v1/{kind}/{item_id}/events"), ("POST", f"/api/v1/{kind}/{item_id}/cancel")]
    if kind == "tasks":
        routes.append(("GET", f"/api/v1/tasks/{item_id}/assignments"))
    for method, path in routes:
        response = api.request(method, path)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        missing = api.request(method, path.replace(item_id, str(uuid.uuid4())))
        assert response.json()["type"] == missing.json()["type"]


def test_a_key_sees_only_its_own_tasks(server: ServerProcess, keys: Keys, as_key: Any) -> None:
    alice, bob = as_key(keys.alice), as_key(keys.bob)
    mine = submit(alice)
    assert_hidden(bob, "tasks", mine["id"])
    assert mine["id"] not in listed(bob, "/api/v1/tasks")
    assert mine["id"] in listed(alice, "/api/v1/tasks")
    assert alice.get(f"/api/v1/tasks/{mine['id']}?wait=0.1").status_code == 200
    assert alice.get(f"/api/v1/tasks/{mine['id']}/assignments").status_code == 200
    # Bob's failed cancel left it alone; Alice may cancel it, and then its event stream ends.
    assert alice.post(f"/api/v1/tasks/{mine['id']}/cancel").json()["status"] == "cancelled"
    with alice.stream("GET", f"/api/v1/tasks/{mine['id']}/events") as stream:
        assert stream.status_code == 200
        assert '"to":"cancelled"' in stream.read().decode()


def test_keys_of_a_project_share_their_tasks(server: ServerProcess, keys: Keys, as_key: Any) -> None:
    team_1, team_2, alice = as_key(keys.team_1), as_key(keys.team_2), as_key(keys.alice)
    ours = submit(team_1)
    [batched] = team_1.post("/api/v1/tasks:batch", json={"tasks": [NOBODY_CAN]}).json()["tasks"]
    assert {ours["id"], batched["id"]} <= listed(team_2, "/api/v1/tasks")
    assert team_2.get(f"/api/v1/tasks/{batched['id']}").status_code == 200
    for task in (ours, batched):
        assert_hidden(alice, "tasks", task["id"])
    assert team_2.post(f"/api/v1/tasks/{ours['id']}/cancel").json()["status"] == "cancelled"
    # ...and a project's key sees none of the tasks of keys outside the project.
    assert not listed(team_1, "/api/v1/tasks") & listed(alice, "/api/v1/tasks")


def test_admins_see_every_task(server: ServerProcess, keys: Keys, as_key: Any) -> None:
    task_ids = {submit(as_key(key))["id"] for key in (keys.alice, keys.bob, keys.team_1)}
    for admin in (as_key(keys.admin), server.client()):
        assert task_ids <= listed(admin, "/api/v1/tasks")
        for task_id in task_ids:
            assert admin.get(f"/api/v1/tasks/{task_id}").status_code == 200
        admin.close()
    # Tasks submitted with the environment's admin key have no owner: only admins see them.
    with server.client() as env_admin:
        unowned = submit(env_admin)
    assert_hidden(as_key(keys.alice), "tasks", unowned["id"])
    assert as_key(keys.admin).get(f"/api/v1/tasks/{unowned['id']}").status_code == 200


def test_idempotency_keys_belong_to_their_owner(server: ServerProcess, keys: Keys, as_key: Any) -> None:
    key = f"order-{uuid.uuid4()}"
    alice, bob = as_key(keys.alice), as_key(keys.bob)
    first = alice.post("/api/v1/tasks", json={**NOBODY_CAN, "idempotency_key": key})
    assert first.status_code == 201
    again = alice.post("/api/v1/tasks", json={**NOBODY_CAN, "idempotency_key": key})
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    # Bob reusing the key gets a task of his own, never Alice's.
    bobs = bob.post("/api/v1/tasks", json={**NOBODY_CAN, "idempotency_key": key})
    assert bobs.status_code == 201
    assert bobs.json()["id"] != first.json()["id"]
    [batched] = bob.post(
        "/api/v1/tasks:batch", json={"tasks": [{**NOBODY_CAN, "idempotency_key": key}]}
    ).json()["tasks"]
    assert batched["id"] == bobs.json()["id"]
    # Within a project the key is shared, as the tasks are.
    team = as_key(keys.team_1).post("/api/v1/tasks", json={**NOBODY_CAN, "idempotency_key": key})
    assert team.status_code == 201
    team_2 = as_key(keys.team_2).post("/api/v1/tasks", json={**NOBODY_CAN, "idempotency_key": key})
    assert (team_2.status_code, team_2.json()["id"]) == (200, team.json()["id"])
    assert len({first.json()["id"], bobs.json()["id"], team.json()["id"]}) == 3


def test_sessions_and_their_subtasks_belong_to_their_creator(
    server: ServerProcess, keys: Keys, as_key: Any
) -> None:
    alice, bob, team_2 = as_key(keys.alice), as_key(keys.bob), as_key(keys.team_2)
    created = alice.post("/api/v1/sessions", json=SESSION)
    assert created.status_code == 201, created.text
    session = created.json()
    subtask_ids = [subtask["task_id"] for subtask in session["subtasks"]]
    assert subtask_ids
    assert_hidden(bob, "sessions", session["id"])
    assert session["id"] not in listed(bob, "/api/v1/sessions")
    assert session["id"] in listed(alice, "/api/v1/sessions")
    for subtask_id in subtask_ids:  # a session's subtasks are its owner's
        assert_hidden(bob, "tasks", subtask_id)
        assert alice.get(f"/api/v1/tasks/{subtask_id}").status_code == 200
    assert not listed(bob, "/api/v1/tasks", session_id=session["id"])
    assert set(subtask_ids) == listed(alice, "/api/v1/tasks", session_id=session["id"])
    # A project's session is the project's.
    shared = as_key(keys.team_1).post("/api/v1/sessions", json=SESSION).json()
    assert team_2.get(f"/api/v1/sessions/{shared['id']}").status_code == 200
    assert_hidden(alice, "sessions", shared["id"])
    assert as_key(keys.admin).get(f"/api/v1/sessions/{session['id']}").status_code == 200
    assert alice.post(f"/api/v1/sessions/{session['id']}/cancel").json()["status"] == "cancelled"
    assert team_2.post(f"/api/v1/sessions/{shared['id']}/cancel").json()["status"] == "cancelled"
    with alice.stream("GET", f"/api/v1/sessions/{session['id']}/events") as stream:
        assert stream.status_code == 200
        assert "finished" in stream.read().decode()


def test_usage_covers_the_keys_own_tasks(
    server: ServerProcess, keys: Keys, as_key: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    agent = AgentProcess(server.ws_url, keys.agent, "owned-echo", log_dir=tmp_path_factory.mktemp("agent"))
    agent.start()
    try:
        alice = as_key(keys.alice)
        with Client(server.base_url, keys.alice) as client:
            task = client.submit("echo", ["echo"], {"text": "mine"})
            assert client.wait(task["id"], timeout=60)["status"] == "succeeded"

        def attempts(key: str) -> int:
            report = as_key(key).get("/api/v1/usage", params={"group_by": "agent"}).json()
            return sum(row["attempts"] for row in report["items"] if row["key"] == "owned-echo")

        assert eventually(lambda: attempts(keys.alice)) == 1
        assert attempts(keys.bob) == 0
        assert attempts(keys.team_1) == 0
        assert attempts(keys.admin) >= 1
        assert alice.get(f"/api/v1/tasks/{task['id']}/assignments").json()["items"]
    finally:
        agent.stop()


def test_agent_keys_see_no_tasks_sessions_or_usage(server: ServerProcess, keys: Keys, as_key: Any) -> None:
    agent = as_key(keys.agent)
    task = submit(as_key(keys.alice))
    for path in ("/api/v1/tasks", f"/api/v1/tasks/{task['id']}", "/api/v1/sessions", "/api/v1/usage"):
        assert agent.get(path).status_code == 403, path
    assert agent.post("/api/v1/tasks", json=NOBODY_CAN).status_code == 403
    assert agent.post("/api/v1/keys", json={"name": "x", "scopes": ["admin"]}).status_code == 403


def test_a_project_must_be_a_name(server: ServerProcess, keys: Keys) -> None:
    with server.client() as api:
        for project in ("", "has space", "nul\u0000", "x" * 101):
            response = api.post("/api/v1/keys", json={"name": "p", "scopes": ["client"], "project": project})
            assert response.status_code == 422, (project, response.text)
            assert response.json()["errors"][0]["field"] == "project"
        listed_keys = api.get("/api/v1/keys").json()["items"]
    assert {"team"} <= {key["project"] for key in listed_keys}


def test_keys_create_with_a_project_from_the_shell(
    server: ServerProcess, keys: Keys, as_key: Any, database_url: str
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    run = [sys.executable, "-m", "agentplane", "keys", "create", "--name", "shell", "--scope", "client"]
    created = subprocess.run([*run, "--project", "team"], env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    assert "project: team" in created.stdout
    secret = next(line.split()[-1] for line in created.stdout.splitlines() if line.startswith("secret:"))
    team_task = submit(as_key(keys.team_1))
    with server.client(secret) as shell_key:
        assert shell_key.get(f"/api/v1/tasks/{team_task['id']}").status_code == 200
    refused = subprocess.run(
        [*run, "--project", "no spaces"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0
    assert "project" in refused.stderr
