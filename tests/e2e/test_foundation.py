"""The service as a user meets it, over a real server process: probes, metrics, keys, scopes, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

PROBLEM = "application/problem+json"


def test_probes_and_metrics_need_no_key(server: ServerProcess) -> None:
    assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert "# TYPE mcp_agents_registered_total counter" in metrics
    assert "# TYPE mcp_task_execution_duration_seconds histogram" in metrics
    assert httpx.get(f"{server.base_url}/openapi.json").status_code == 200
    assert httpx.get(f"{server.base_url}/docs").status_code == 200


def test_no_key_is_401_problem_json(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base_url}/api/v1/keys")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert body["type"] == "/problems/unauthorized"


def test_a_wrong_key_is_401(server: ServerProcess) -> None:
    with server.client("ap_not_a_real_key") as client:
        assert client.get("/api/v1/keys").status_code == 401


def test_a_client_key_on_an_admin_route_is_403(server: ServerProcess) -> None:
    client_key = server.create_key("client")
    with server.client(client_key) as client:
        response = client.get("/api/v1/keys")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "admin" in response.json()["detail"]


def test_key_lifecycle_shows_the_secret_once(server: ServerProcess) -> None:
    with server.client() as admin:
        created = admin.post("/api/v1/keys", json={"name": "ci-bot", "scopes": ["client"]})
        assert created.status_code == 201
        key = created.json()
        secret = key["secret"]
        assert secret.startswith("ap_")
        assert key["prefix"] == secret[:10]

        listed = admin.get("/api/v1/keys").json()["items"]
        mine = [item for item in listed if item["id"] == key["id"]]
        assert mine
        assert "secret" not in mine[0]
        assert secret not in admin.get("/api/v1/keys").text

        with server.client(secret) as client:
            assert client.get("/api/v1/agents").status_code in {200, 404}

        revoked = admin.delete(f"/api/v1/keys/{key['id']}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None


def test_a_revoked_key_stops_working(server: ServerProcess) -> None:
    with server.client() as admin:
        key = admin.post("/api/v1/keys", json={"name": "short-lived", "scopes": ["admin"]}).json()
        admin.delete(f"/api/v1/keys/{key['id']}")
    with server.client(key["secret"]) as client:
        assert client.get("/api/v1/keys").status_code == 401


def test_validation_errors_name_the_field(server: ServerProcess) -> None:
    with server.client() as admin:
        response = admin.post("/api/v1/keys", json={"name": "", "scopes": ["root"], "extra": 1})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    fields = {error["field"] for error in response.json()["errors"]}
    assert {"name", "scopes.0", "extra"} <= fields


def test_not_json_is_a_problem_not_a_500(server: ServerProcess) -> None:
    with server.client() as admin:
        response = admin.post(
            "/api/v1/keys", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)


def test_unknown_routes_and_ids_are_problems(server: ServerProcess) -> None:
    with server.client() as admin:
        missing_route = admin.get("/api/v1/nothing-here")
        missing_key = admin.delete("/api/v1/keys/00000000-0000-0000-0000-000000000000")
        bad_id = admin.delete("/api/v1/keys/not-a-uuid")
    assert missing_route.status_code == 404
    assert missing_route.headers["content-type"].startswith(PROBLEM)
    assert missing_key.status_code == 404
    assert bad_id.status_code == 422


def test_keys_never_reach_the_log(server: ServerProcess) -> None:
    secret = server.create_key("agent", name="log-check")
    httpx.get(f"{server.base_url}/api/v1/keys?token={secret}")
    httpx.get(f"{server.base_url}/api/v1/keys", headers={"Authorization": f"Bearer {secret}"})
    log = server.log_path.read_text()
    assert secret not in log
    assert server.admin_key not in log


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentplane", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_bad_setting_stops_the_start_with_one_line() -> None:
    env = {**os.environ, "AGENT_TASK_TIMEOUT": "banana"}
    result = _cli("serve", env=env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "AGENT_TASK_TIMEOUT" in lines[0]
    assert "Traceback" not in result.stderr


def test_keys_create_from_the_shell(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    result = _cli("keys", "create", "--name", "shell", "--scope", "client", env=env)
    assert result.returncode == 0, result.stderr
    assert "secret: ap_" in result.stdout
    listed = _cli("keys", "list", env=env)
    assert "shell" in listed.stdout
    assert "secret" not in listed.stdout


@pytest.mark.e2e
def test_embedded_postgres_serves_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    """The README's first command: no DATABASE_URL, so the server starts its own PostgreSQL."""
    data_dir = tmp_path / "data"
    proc = ServerProcess("", log_dir=tmp_path)
    env_without_db = {"AGENTPLANE_DATA_DIR": str(data_dir)}
    proc.database_url = ""
    proc.extra_env = env_without_db
    original_env = proc.env

    def env() -> dict[str, str]:
        values = original_env()
        values.pop("DATABASE_URL", None)
        values.pop("AGENTPLANE_ADMIN_KEY", None)
        return values

    proc.env = env  # type: ignore[method-assign]
    proc.start(timeout=60)
    try:
        first_log = proc.log()
        assert "first admin API key" in first_log
        bootstrap = next(line.strip() for line in first_log.splitlines() if line.strip().startswith("ap_"))
        with proc.client(bootstrap) as admin:
            created = admin.post("/api/v1/keys", json={"name": "survivor", "scopes": ["client"]})
            assert created.status_code == 201
        proc.stop()
        proc.start(timeout=60)
        with proc.client(bootstrap) as admin:
            names = [item["name"] for item in admin.get("/api/v1/keys").json()["items"]]
        assert "survivor" in names
        assert proc.log().count("first admin API key") == 1
    finally:
        proc.stop()
