"""Bad input at the REST edge is a 422 naming the field, on a connection that stays open (issue 12).

Before: NUL in text or an integer past 64 bits reached PostgreSQL and came back as a 500 that also dropped the
keep-alive connection; lax parsing took `"priority": false` as 0; a chunked body over the limit got 400."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.rawhttp import RawConnection
from tests.support.server import ServerProcess

PROBLEM = "application/problem+json"
TASK = {"type": "edge", "capabilities": ["edge"]}


@pytest.fixture(scope="module")
def client_key(server: ServerProcess) -> str:
    return server.create_key("client", name="edges")


@pytest.fixture
def conn(server: ServerProcess) -> Iterator[RawConnection]:
    with RawConnection(server.port) as connection:
        yield connection


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _post(conn: RawConnection, key: str, path: str, body: Any) -> Any:
    return conn.request("POST", path, body=json.dumps(body).encode(), headers=_auth(key))


def _assert_422(response: Any, field: str) -> None:
    assert response.status == 422, response.body
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["type"] == "/problems/invalid_input"
    assert [error["field"] for error in problem["errors"]][:1] == [field], problem


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/tasks", {**TASK, "payload": {"text": "a\u0000b"}}, "payload"),
        ("/api/v1/tasks", {**TASK, "payload": {"k\u0000": 1}}, "payload"),
        ("/api/v1/tasks", {**TASK, "payload": {"deep": [{"n": 2**64}]}}, "payload"),
        ("/api/v1/tasks", {**TASK, "payload": {"n": -(2**63) - 1}}, "payload"),
        ("/api/v1/tasks", {**TASK, "payload": {"s": "\ud800"}}, "payload"),
        ("/api/v1/tasks", {**TASK, "idempotency_key": "k\u0000"}, "idempotency_key"),
        ("/api/v1/tasks", {**TASK, "model": "gpt\u0000"}, "model"),
        ("/api/v1/tasks", {**TASK, "priority": 2**63}, "priority"),
        ("/api/v1/tasks:batch", {"tasks": [TASK, {**TASK, "payload": {"x": "\u0000"}}]}, "tasks.1.payload"),
        (
            "/api/v1/sessions",
            {"strategy": "chain", "task": {**TASK, "payload": {"x": "\u0000"}}, "params": {}},
            "task.payload",
        ),
        (
            "/api/v1/sessions",
            {"strategy": "chain", "task": TASK, "params": {"steps": [{"c\u0000": 1}]}},
            "params",
        ),
    ],
)
def test_unstorable_input_is_422_and_the_connection_stays_open(
    conn: RawConnection, client_key: str, path: str, body: Any, field: str
) -> None:
    _assert_422(_post(conn, client_key, path, body), field)
    # The same socket answers the next request: the error did not cost the client its connection.
    assert conn.request("GET", "/healthz").status == 200


def test_a_number_too_large_for_a_double_is_422(conn: RawConnection, client_key: str) -> None:
    # 1e400 parses as infinity, which JSON cannot hold: it would be stored, and read back, as null.
    body = b'{"type": "edge", "capabilities": ["edge"], "payload": {"big": [1e400]}}'
    _assert_422(conn.request("POST", "/api/v1/tasks", body=body, headers=_auth(client_key)), "payload")


def test_nul_in_a_key_name_is_422(conn: RawConnection, server: ServerProcess) -> None:
    body = {"name": "ci\u0000bot", "scopes": ["client"]}
    _assert_422(_post(conn, server.admin_key, "/api/v1/keys", body), "name")


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ("/api/v1/tasks?type=%00", "query.type"),
        ("/api/v1/tasks?agent_id=a%00b&status=pending", "query.agent_id"),
        ("/api/v1/agents?capability=%00", "query.capability"),
        ("/api/v1/agents/ag%00ent", "path.agent_id"),
        ("/api/v1/agents/ag%00ent/drain", "path.agent_id"),
    ],
)
def test_nul_in_a_query_or_path_parameter_is_422(
    conn: RawConnection, server: ServerProcess, target: str, field: str
) -> None:
    method = "POST" if target.endswith("/drain") else "GET"
    _assert_422(conn.request(method, target, headers=_auth(server.admin_key)), field)
    assert conn.request("GET", "/healthz").status == 200


def test_an_agents_cursor_hiding_a_nul_is_422(conn: RawConnection, client_key: str) -> None:
    response = conn.request("GET", "/api/v1/agents?cursor=AA==", headers=_auth(client_key))
    _assert_422(response, "query.cursor")


def test_a_last_event_id_past_64_bits_is_422(conn: RawConnection, server: ServerProcess) -> None:
    created = _post(conn, server.admin_key, "/api/v1/tasks", TASK).json()
    headers = {**_auth(server.admin_key), "Last-Event-ID": "9" * 30}
    _assert_422(
        conn.request("GET", f"/api/v1/tasks/{created['id']}/events", headers=headers), "header.last-event-id"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"priority": False}, "priority"),
        ({"priority": "3"}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"max_cost": True}, "max_cost"),
        ({"timeout": True}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "0s"}, "timeout"),
        ({"queue_timeout": -1}, "queue_timeout"),
        ({"capabilities": "edge"}, "capabilities"),
    ],
)
def test_no_coercion_of_wrong_types(conn: RawConnection, client_key: str, change: Any, field: str) -> None:
    _assert_422(_post(conn, client_key, "/api/v1/tasks", {**TASK, **change}), field)


def test_what_the_schema_allows_is_accepted(conn: RawConnection, client_key: str) -> None:
    body = {**TASK, "priority": 3.0, "timeout": "30s", "queue_timeout": 0.5, "max_attempts": 2}
    response = _post(conn, client_key, "/api/v1/tasks", body)
    assert response.status == 201, response.body
    task = response.json()
    assert (task["priority"], task["timeout"], task["queue_timeout"]) == (3, 30.0, 0.5)


def test_an_oversized_chunked_body_is_413(server: ServerProcess, client_key: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "edge", "capabilities": ["edge"], "payload": {"blob": "'
        for _ in range(10):
            yield b"x" * 1_000_000
        yield b'"}}'

    with httpx.Client(base_url=server.base_url, headers=_auth(client_key), timeout=30) as client:
        response = client.post("/api/v1/tasks", content=chunks())
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "/problems/payload_too_large"


def test_405_lists_every_method_of_the_path(conn: RawConnection, server: ServerProcess) -> None:
    response = conn.request("PUT", "/api/v1/agents/some-agent", headers=_auth(server.admin_key))
    assert response.status == 405
    assert response.headers["allow"] == "DELETE, GET"
