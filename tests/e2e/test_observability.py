"""What operators see: the seed's metrics with the right types, labels and counts after real work by SDK
agents, the usage report, and JSON logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.metrics import EXECUTION_BUCKETS
from tests.support.agent_procs import AgentProcess
from tests.support.polling import eventually
from tests.support.server import ServerProcess

SERVER_ENV = {
    "AGENTPLANE_LOG_FORMAT": "json",
    "AGENTPLANE_METRICS_REFRESH": "0.3s",
    "AGENT_HEALTH_CHECK_INTERVAL": "30s",
}
WORDS = 12


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProcess]]:
    key = server.create_key("agent", name="observed")
    logs = tmp_path_factory.mktemp("agents")
    agents = [
        AgentProcess(server.ws_url, key, "obs-claude", model="claude-3-opus", log_dir=logs).start(),
        AgentProcess(server.ws_url, key, "obs-gpt", model="gpt-4", log_dir=logs).start(),
    ]
    with server.client() as client:
        eventually(
            lambda: len(client.get("/api/v1/agents", params={"status": "active"}).json()["items"]) == 2,
            timeout=30,
        )
    yield agents
    for agent in agents:
        agent.stop()


def samples(server: ServerProcess) -> dict[str, tuple[str, list[Sample]]]:
    text = httpx.get(f"{server.base_url}/metrics").text
    return {family.name: (family.type, family.samples) for family in text_string_to_metric_families(text)}


def value(found: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_seed_metrics_count_what_happened(server: ServerProcess, fleet: list[AgentProcess]) -> None:
    with server.client() as client:
        good = [
            {"type": "word-count", "capabilities": ["word-count"], "payload": {"text": "a b c " * 4}}
        ] * WORDS
        bad = [{"type": "json-transform", "capabilities": ["json-transform"], "payload": {"data": 7}}]
        ids = [
            t["id"] for t in client.post("/api/v1/tasks:batch", json={"tasks": good + bad}).json()["tasks"]
        ]
        finals = [client.get(f"/api/v1/tasks/{task_id}", params={"wait": 30}).json() for task_id in ids]
    assert [t["status"] for t in finals] == ["succeeded"] * WORDS + ["failed"]
    models = {"obs-claude": "claude-3-opus", "obs-gpt": "gpt-4"}
    by_model: dict[str, int] = {}
    for task in finals[:WORDS]:
        by_model[models[task["agent_id"]]] = by_model.get(models[task["agent_id"]], 0) + 1

    families = samples(server)
    kind, registered = families["mcp_agents_registered"]
    assert kind == "counter"
    assert value(registered, "mcp_agents_registered_total", model="gpt-4") == 1
    assert value(registered, "mcp_agents_registered_total", model="claude-3-opus") == 1

    kind, assigned = families["mcp_tasks_assigned"]
    assert kind == "counter"
    assert value(assigned, "mcp_tasks_assigned_total", task_type="word-count") == WORDS
    assert value(assigned, "mcp_tasks_assigned_total", task_type="json-transform") == 1
    for model, count in by_model.items():
        assert value(assigned, "mcp_tasks_assigned_total", agent_model=model, task_type="word-count") == count

    kind, duration = families["mcp_task_execution_duration_seconds"]
    assert kind == "histogram"
    assert value(duration, "mcp_task_execution_duration_seconds_count", task_type="word-count") == WORDS
    buckets = sorted({float(s.labels["le"]) for s in duration if s.name.endswith("_bucket")} - {float("inf")})
    assert buckets == pytest.approx(EXECUTION_BUCKETS)
    assert {s.labels["agent_model"] for s in duration if s.name.endswith("_count")} <= set(models.values())

    kind, finished = families["agentplane_tasks_finished"]
    assert (
        value(finished, "agentplane_tasks_finished_total", task_type="word-count", status="succeeded")
        == WORDS
    )
    assert (
        value(finished, "agentplane_tasks_finished_total", task_type="json-transform", status="failed") == 1
    )

    def gauges_refreshed() -> bool:
        found = samples(server)
        active = found["mcp_agents_active"]
        utilization = found["mcp_agent_utilization_ratio"]
        return (
            active[0] == "gauge"
            and value(active[1], "mcp_agents_active", model="gpt-4", status="active") == 1
            and {s.labels["agent_id"] for s in utilization[1]} == {"obs-claude", "obs-gpt"}
            and all(0 <= s.value <= 1 for s in utilization[1])
        )

    eventually(gauges_refreshed, timeout=10)
    assert "agentplane_dispatch_latency_seconds" in families
    assert "http_requests" in families  # the instrumentator's


def test_usage_reports_tokens_and_cost_by_model(server: ServerProcess, fleet: list[AgentProcess]) -> None:
    with server.client() as client:
        spec = {
            "type": "word-count",
            "capabilities": ["word-count"],
            "payload": {"text": "usage counts words"},
        }
        task = client.post("/api/v1/tasks", json=spec).json()
        assert client.get(f"/api/v1/tasks/{task['id']}", params={"wait": 30}).json()["status"] == "succeeded"
        report = client.get("/api/v1/usage", params={"group_by": "model"}).json()
        assert {row["key"] for row in report["items"]} <= {"gpt-4", "claude-3-opus"}
        assert report["total"]["input_tokens"] > 0
        assert report["total"]["cost"] > 0
        by_type = client.get("/api/v1/usage", params={"group_by": "task_type"}).json()
        assert "word-count" in {row["key"] for row in by_type["items"]}
        bad = client.get("/api/v1/usage", params={"group_by": "planet"})
        assert bad.status_code == 422


def test_deregistering_removes_the_agents_series(server: ServerProcess, fleet: list[AgentProcess]) -> None:
    with server.client() as client:
        assert client.delete("/api/v1/agents/obs-claude").status_code == 204

    def gone() -> bool:
        utilization = samples(server)["mcp_agent_utilization_ratio"][1]
        return "obs-claude" not in {s.labels["agent_id"] for s in utilization}

    eventually(gone, timeout=10)


def test_logs_are_one_json_object_per_line(server: ServerProcess, fleet: list[AgentProcess]) -> None:
    lines = [line for line in Path(server.log_path).read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    assert entries
    registered = [e for e in entries if e["message"] == "agent registered"]
    assert {e["agent_id"] for e in registered} >= {"obs-claude", "obs-gpt"}
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
