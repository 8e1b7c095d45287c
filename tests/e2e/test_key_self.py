"""`GET /api/v1/me`: any valid key learns its own name, scopes and project (the console needs it)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


def test_each_scope_reads_what_it_may_do(server: ServerProcess) -> None:
    with server.client() as admin:
        created = admin.post("/api/v1/keys", json={"name": "ui", "scopes": ["client"], "project": "team-a"})
        assert created.status_code == 201, created.text
        agent_secret = admin.post("/api/v1/keys", json={"name": "bot", "scopes": ["agent"]}).json()["secret"]
        env_admin = admin.get("/api/v1/me")
    key = created.json()
    assert env_admin.status_code == 200
    assert env_admin.json() == {"id": None, "name": "env-admin", "scopes": ["admin", "agent", "client"],
                                "project": None}  # fmt: skip
    with server.client(key["secret"]) as client:
        me = client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json() == {"id": key["id"], "name": "ui", "scopes": ["client"], "project": "team-a"}
    assert "secret" not in me.json()
    assert key["secret"] not in me.text
    with server.client(agent_secret) as agent:
        assert agent.get("/api/v1/me").json()["scopes"] == ["agent"]


def test_a_wrong_or_missing_key_is_401_problem_json(server: ServerProcess) -> None:
    with server.client("ap_not_a_key_at_all") as client:
        wrong = client.get("/api/v1/me")
    missing = httpx.get(f"{server.base_url}/api/v1/me")
    for response in (wrong, missing):
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == "/problems/unauthorized"


def test_a_revoked_key_is_401(server: ServerProcess) -> None:
    with server.client() as admin:
        key = admin.post("/api/v1/keys", json={"name": "gone", "scopes": ["client"]}).json()
        assert admin.delete(f"/api/v1/keys/{key['id']}").status_code == 200
    with server.client(key["secret"]) as client:
        assert client.get("/api/v1/me").status_code == 401
