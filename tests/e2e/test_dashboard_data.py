"""Every series the Grafana dashboard charts has a sample after a mixed run against a real server.

The run is scripted with real agents (SDK demo agents in their own processes, and raw protocol agents where
a test needs to hold, fail or ignore a frame). `/metrics` is scraped before, during and after it, and the
scrapes are handed to promtool as the input series of a rules unit test that evaluates every dashboard query
with Prometheus's own engine: a query that would show "No data" fails the test, naming its panel.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.collab.strategies import STRATEGIES
from tests.support.agent_procs import AgentProcess
from tests.support.polling import eventually, eventually_async
from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent
from tests.unit.test_dashboard import TEMPO_UID, all_panels, load_dashboard, promtool

pytestmark = pytest.mark.e2e

SERVER_ENV = {
    "AGENTPLANE_METRICS_REFRESH": "0.2s",
    # Pings often and briefly, so the agent that never answers one fails its health checks within the test.
    "AGENT_HEALTH_CHECK_INTERVAL": "0.5s",
    "AGENT_HEALTH_CHECK_TIMEOUT": "0.5s",
    "AGENT_RETRY_BACKOFF": "0.1s",
}
# Grafana's variables as durations Prometheus parses; the scrapes are a minute apart in promtool's time.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

Series = dict[str, float]  # `name{labels}` -> value, one scrape


def scrape(server: ServerProcess) -> Series:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def value_of(series: Series, name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for key, v in series.items() if key.startswith(name + "{") and all(w in key for w in wanted))


def _promtool_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(value)


def dashboard_queries() -> Iterator[tuple[str, str]]:
    for panel in all_panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") == TEMPO_UID:
                continue  # traces (TraceQL), checked by tests/unit/test_dashboard.py
            expr = target["expr"]
            for variable, duration in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, duration)
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", expr


def queries_without_data(scrapes: list[Series], tmp_path: Path) -> list[str]:
    """The dashboard queries that have no sample at the last scrape, evaluated by promtool."""
    names = sorted({key for scrape in scrapes for key in scrape})
    inputs = [
        {
            "series": name,
            "values": " ".join(
                _promtool_value(scrape[name]) if name in scrape else "_" for scrape in scrapes
            ),
        }
        for name in names
    ]
    queries = list(dashboard_queries())
    missing: list[str] = []
    # One promtool run per query would be slow; one run for all names the failing ones in its output.
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": where,
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {"expr": f"absent({expr})", "eval_time": f"{len(scrapes) - 1}m", "exp_samples": []}
                ],
            }
            for where, expr in queries
        ],
    }
    path = tmp_path / "dashboard-data.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        # promtool quotes each failing expression as a JSON string would.
        missing = [where for where, expr in queries if json.dumps(f"absent({expr})") in output]
        assert missing, f"promtool failed for another reason:\n{output}"
    return missing


@pytest.fixture(scope="module")
def demo_agent(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    key = server.create_key("agent", name="dashboard-demo")
    agent = AgentProcess(
        server.ws_url, key, "dash-demo", max_concurrency=8, log_dir=tmp_path_factory.mktemp("agents")
    ).start()
    with server.client() as client:
        eventually(
            lambda: any(a["id"] == "dash-demo" for a in client.get("/api/v1/agents").json()["items"]),
            timeout=30,
        )
    yield agent
    agent.stop()


async def _hold_until_busy(server: ServerProcess, key: str, client: httpx.AsyncClient) -> Series:
    """A one-slot agent holds a task: the fleet gauge shows it `busy`. Then it finishes the task."""
    holder = await RawAgent.connect(
        server.ws_url, key, agent_id="dash-holder", model="holder-1", capabilities=["hold"], max_concurrency=1
    )
    try:
        response = await client.post("/api/v1/tasks", json={"type": "hold", "capabilities": ["hold"]})
        assert response.status_code == 201, response.text
        assign = await holder.expect("assign")

        async def busy() -> Series | None:
            found = await asyncio.to_thread(scrape, server)
            return (
                found if value_of(found, "mcp_agents_active", model="holder-1", status="busy") == 1 else None
            )

        during = await eventually_async(busy, timeout=15, interval=0.1)
        await holder.complete(assign, output={"held": True}, input_tokens=3, output_tokens=2, cost=0.001)
        return during
    finally:
        await holder.close()


async def _retry_once(server: ServerProcess, key: str, client: httpx.AsyncClient) -> None:
    """A retryable failure sends the task back to the queue (a retry), then it succeeds."""
    flaky = await RawAgent.connect(server.ws_url, key, agent_id="dash-flaky", capabilities=["flaky"])
    try:
        task = (await client.post("/api/v1/tasks", json={"type": "flaky", "capabilities": ["flaky"]})).json()
        first = await flaky.expect("assign")
        await flaky.fail(first, {"code": "transient", "message": "try again", "retryable": True})
        await flaky.expect("ack")
        second = await flaky.expect("assign", timeout=15)
        await flaky.complete(second)
        done = (await client.get(f"/api/v1/tasks/{task['id']}", params={"wait": 15})).json()
        assert (done["status"], done["attempt"]) == ("succeeded", 2)
    finally:
        await flaky.close()


async def _fail_health_checks(server: ServerProcess, key: str) -> None:
    """An agent that never answers a ping: its health checks fail."""
    mute = await RawAgent.connect(
        server.ws_url, key, agent_id="dash-mute", model="mute-1", capabilities=["mute"]
    )
    try:

        async def failed() -> bool:
            found = await asyncio.to_thread(scrape, server)
            return value_of(found, "agentplane_health_check_failures_total", model="mute-1") >= 1

        await eventually_async(failed, timeout=20, interval=0.2)
    finally:
        await mute.close()


async def scripted_run(server: ServerProcess, key: str) -> list[Series]:
    scrapes = [scrape(server)]
    async with server.async_client() as client:
        # Submitted one at a time and in a batch; one succeeds, one fails (a bad payload), one is cancelled.
        one = await client.post(
            "/api/v1/tasks",
            json={"type": "word-count", "capabilities": ["word-count"], "payload": {"text": "a b"}},
        )
        assert one.status_code == 201, one.text
        batch = await client.post(
            "/api/v1/tasks:batch",
            json={
                "tasks": [
                    {"type": "word-count", "capabilities": ["word-count"], "payload": {"text": "c d e"}},
                    {"type": "json-transform", "capabilities": ["json-transform"], "payload": {"data": 7}},
                    {"type": "sleep", "capabilities": ["sleep"], "payload": {"ms": 60_000}},
                ]
            },
        )
        assert batch.status_code == 201, batch.text
        good, bad, slow = (task["id"] for task in batch.json()["tasks"])
        await eventually_async(lambda: _status_is(client, slow, "running"), timeout=15, interval=0.05)
        cancelled = await client.post(f"/api/v1/tasks/{slow}/cancel")
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        finals = [
            (await client.get(f"/api/v1/tasks/{task_id}", params={"wait": 15})).json()["status"]
            for task_id in (one.json()["id"], good, bad)
        ]
        assert finals == ["succeeded", "succeeded", "failed"]
        scrapes.append(scrape(server))

        # A collaboration session, run to its end by the demo agent.
        session = await client.post(
            "/api/v1/sessions",
            json={
                "strategy": "map_reduce",
                "task": {
                    "type": "word-count",
                    "capabilities": ["word-count"],
                    "payload": {"lines": ["a b", "b c", "c d"]},
                },
                "params": {"split_field": "lines", "chunk_size": 1, "reducer": "sum"},
            },
        )
        assert session.status_code == 201, session.text
        session_id = session.json()["id"]
        ended = await eventually_async(lambda: _session_done(client, session_id), timeout=30, interval=0.1)
        assert ended["status"] == "succeeded", ended

        scrapes.append(await _hold_until_busy(server, key, client))
        await _retry_once(server, key, client)
        await _fail_health_checks(server, key)
    scrapes.append(scrape(server))
    scrapes.append(scrape(server))  # a second sample of series born last, so rate() has two points
    return scrapes


async def _status_is(client: httpx.AsyncClient, task_id: str, status: str) -> bool:
    return bool((await client.get(f"/api/v1/tasks/{task_id}")).json()["status"] == status)


async def _session_done(client: httpx.AsyncClient, session_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = (await client.get(f"/api/v1/sessions/{session_id}")).json()
    return body if body["status"] != "running" else None


async def test_every_charted_series_has_a_sample_after_a_mixed_run(
    server: ServerProcess, demo_agent: AgentProcess, tmp_path: Path
) -> None:
    key = server.create_key("agent", name="dashboard-raw")
    scrapes = await scripted_run(server, key)
    last = scrapes[-1]

    # The counters the issue found silent, each counting what the run did.
    # Tasks clients submitted (one, a batch of three, the held one, the flaky one); not session subtasks.
    assert value_of(last, "agentplane_tasks_submitted_total") == 6
    assert value_of(last, "agentplane_tasks_finished_total", status="cancelled") >= 1
    assert value_of(last, "agentplane_ws_frames_total", direction="in", type="result") >= 1
    assert value_of(last, "agentplane_ws_frames_total", direction="out", type="assign") >= 1
    # A quiet moment: no session runs, and every strategy reads 0 instead of having no series.
    for strategy in STRATEGIES:
        assert f'agentplane_sessions_active{{strategy="{strategy}"}}' in last, strategy
        assert last[f'agentplane_sessions_active{{strategy="{strategy}"}}'] == 0

    assert queries_without_data(scrapes, tmp_path) == []


def test_the_check_names_a_query_without_data(tmp_path: Path) -> None:
    # Scrapes of a server that exported nothing: every query but the `or vector(0)` ones lacks data.
    missing = queries_without_data([{}, {}], tmp_path)
    assert any("'Submitted vs assigned /s'" in where for where in missing)
    assert not any("'Active agents' A" in where for where in missing), "`or vector(0)` has data"
