"""Collaboration sessions over a real server and real SDK agents in their own processes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agents import PROJECT_ROOT, AgentFleet
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

# One server for the module: consensus ends after 3 rounds and 2 of 3 (0.67) is enough agreement.
SERVER_ENV = {"AGENT_CONSENSUS_MAX_ROUNDS": "3", "AGENT_CONSENSUS_THRESHOLD": "0.6"}
AGENTS = ["agent-1", "agent-2", "agent-3", "agent-4"]
CAPABILITIES = ["text", "vote", "generate", "review", "refactor"]
OPEN = {"pending", "assigned", "running"}
VOCABULARY = [f"w{index}" for index in range(40)] + ["alpha", "beta", "gamma", "delta", "omega"]


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFleet]:
    agents = AgentFleet(server, server.create_key("agent"), tmp_path_factory.mktemp("agents"))
    for number, agent_id in enumerate(AGENTS):
        # Only the first two offer "rare", so a session wanting three of them falls short.
        agents.start(agent_id, CAPABILITIES + (["rare"] if number < 2 else []))
    agents.wait_active()
    yield agents
    agents.stop()


@pytest.fixture
def api(server: ServerProcess, fleet: AgentFleet) -> Iterator[httpx.Client]:
    fleet.wait_active()  # a test that restarted the server leaves them reconnecting
    with server.client() as client:
        yield client


def create(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/api/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/v1/sessions/{created['id']}"
    return created


def wait_until(
    api: httpx.Client, session_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session: dict[str, Any] = api.get(f"/api/v1/sessions/{session_id}").json()
        if done(session):
            return session
        time.sleep(0.1)
    raise AssertionError(f"session {session_id} did not get there in {timeout}s: {session}")


def wait_end(api: httpx.Client, session_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session: dict[str, Any] = api.get(f"/api/v1/sessions/{session_id}", params={"wait": 5}).json()
        if session["status"] != "running":
            return session
    raise AssertionError(f"session {session_id} still running after {timeout}s: {session}")


def text_lines(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(VOCABULARY, k=rng.randint(1, 12))) for _ in range(count)]


def counts(lines: list[str]) -> dict[str, int]:
    return dict(Counter(word for line in lines for word in line.split()))


def word_count_session(lines: list[str], task_type: str = "word-count", **params: Any) -> dict[str, Any]:
    return {
        "strategy": "map_reduce",
        "task": {"type": task_type, "capabilities": ["text"], "payload": {"lines": lines}},
        "participants": {"capabilities": ["text"]},
        "params": {"split_field": "lines", "chunk_size": 50, "reducer": "sum", **params},
    }


def test_map_reduce_counts_1000_lines_exactly_across_four_agents(api: httpx.Client) -> None:
    lines = text_lines(1000, seed=1)
    created = create(api, word_count_session(lines, max_parallel=8))
    assert created["status"] == "running"
    assert created["participants"] == AGENTS
    assert [s["key"] for s in created["subtasks"]] == [f"map-{i}" for i in range(8)]

    session = wait_end(api, created["id"])
    assert session["status"] == "succeeded", session["error"]
    assert session["result"] == counts(lines)
    subtasks = session["subtasks"]
    assert sorted(s["key"] for s in subtasks) == sorted(f"map-{i}" for i in range(20))
    assert {s["status"] for s in subtasks} == {"succeeded"}
    assert {s["agent_id"] for s in subtasks} <= set(AGENTS)
    assert session["cost"] == pytest.approx(sum(s["cost"] for s in subtasks))
    assert session["cost"] > 0
    assert session["finished_at"] is not None


def test_consensus_of_three_agents_that_agree(api: httpx.Client) -> None:
    created = create(
        api,
        {
            "strategy": "consensus",
            "task": {"type": "answer", "capabilities": ["vote"], "payload": {"question": "what is 6 * 7?"}},
            "participants": {"capabilities": ["vote"], "count": 3},
        },
    )
    assert len(created["participants"]) == 3
    assert set(created["participants"]) <= set(AGENTS)

    session = wait_end(api, created["id"])
    assert session["status"] == "succeeded", session["error"]
    result = session["result"]
    assert result["answer"] == {"answer": 42}
    assert (result["votes"], result["of"], result["share"], result["round"]) == (3, 3, 1.0, 1)
    assert sorted(result["agents"]) == sorted(created["participants"])
    assert session["round"] == 1


def test_consensus_that_never_comes_fails_after_max_rounds_keeping_every_round(api: httpx.Client) -> None:
    participants = ["agent-1", "agent-2", "agent-3"]
    created = create(
        api,
        {
            "strategy": "consensus",
            "task": {"type": "vote", "capabilities": ["vote"], "payload": {}},
            "participants": {"agent_ids": participants},
        },
    )
    session = wait_end(api, created["id"])
    assert session["status"] == "failed"
    error = session["error"]
    assert error["code"] == "no_consensus"
    assert "after 3 round(s)" in error["message"]
    rounds = error["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for recorded in rounds:
        assert [a["output"] for a in recorded["answers"]] == [{"answer": agent} for agent in participants]
    assert session["state"]["rounds"] == rounds
    assert session["round"] == 3
    keys = sorted(s["key"] for s in session["subtasks"])
    assert keys == sorted(f"r{r}-{agent}" for r in (1, 2, 3) for agent in participants)
    # Later rounds show every agent the proposals of the round before.
    second = next(s for s in session["subtasks"] if s["key"] == "r2-agent-1")
    payload = api.get(f"/api/v1/tasks/{second['task_id']}").json()["payload"]
    assert payload["round"] == 2
    assert [p["output"] for p in payload["proposals"]] == [{"answer": agent} for agent in participants]


def test_consensus_two_of_three_meets_threshold_0_6(api: httpx.Client) -> None:
    created = create(
        api,
        {
            "strategy": "consensus",
            "task": {
                "type": "vote",
                "capabilities": ["vote"],
                "payload": {"default": "yes", "answers": {"agent-3": "no"}},
            },
            "participants": {"agent_ids": ["agent-1", "agent-2", "agent-3"]},
            "params": {"key": "answer"},
        },
    )
    session = wait_end(api, created["id"])
    assert session["status"] == "succeeded", session["error"]
    result = session["result"]
    assert result["answer"] == {"answer": "yes"}
    assert (result["votes"], result["of"]) == (2, 3)
    assert result["share"] == pytest.approx(2 / 3)
    assert result["agents"] == ["agent-1", "agent-2"]


def test_chain_generate_review_refactor_passes_outputs_along(api: httpx.Client) -> None:
    steps = [
        {
            "name": "generate",
            "capability": "generate",
            "input": {"spec": "$input.spec", "params": "$input.params"},
        },
        {
            "name": "review",
            "capability": "review",
            "type": "review",
            "input": {"code": "$steps.generate.output.code"},
        },
        {
            "name": "refactor",
            "capability": "refactor",
            "type": "refactor",
            "input": {"code": "$steps.review.output.code", "comments": "$steps.review.output.comments"},
        },
    ]
    created = create(
        api,
        {
            "strategy": "chain",
            "task": {"type": "generate", "payload": {"spec": "add two numbers", "params": ["a", "b"]}},
            "participants": {"capabilities": ["generate", "review", "refactor"]},
            "params": {"steps": steps},
        },
    )
    session = wait_end(api, created["id"])
    assert session["status"] == "succeeded", session["error"]
    by_key = {s["key"]: s for s in session["subtasks"]}
    assert list(by_key) == ["step-generate", "step-review", "step-refactor"]
    generated = by_key["step-generate"]["output"]
    assert generated["code"].startswith("def add_two_numbers(a, b):")
    review = by_key["step-review"]["output"]
    assert review["code"] == generated["code"]
    assert review["comments"]  # the generated stub is still a stub
    refactor_payload = api.get(f"/api/v1/tasks/{by_key['step-refactor']['task_id']}").json()["payload"]
    assert refactor_payload == {"code": generated["code"], "comments": review["comments"]}
    assert session["result"] == by_key["step-refactor"]["output"]
    assert session["round"] == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda body: body["params"].pop("chunk_size"), "params.chunk_size"),
        (lambda body: body["params"].update(split_field="words"), "task.payload.words"),
        (lambda body: body["params"].update(chunk_sise=3), "params"),
        (lambda body: body["params"].update(reducer="median"), "params.reducer"),
        (lambda body: body.update(strategy="debate"), "strategy"),
        (lambda body: body["participants"].update(agent_ids=["agent-1"]), "participants"),
        (lambda body: body.update(colour="blue"), "colour"),
        (lambda body: body["task"].update(capabilities=[]), "task.capabilities"),
        (
            lambda body: body["params"].update(reducer="agent", reduce_capability="no spaces!"),
            "params.reduce_capability",
        ),
        (lambda body: body.update(timeout="1h"), "timeout"),
    ],
)
def test_a_bad_spec_is_422_naming_the_field(
    api: httpx.Client, change: Callable[[Any], Any], field: str
) -> None:
    body = word_count_session(["one line", "two lines"])
    change(body)
    response = api.post("/api/v1/sessions", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["errors"][0]["field"] == field, problem


def test_a_chain_template_naming_a_later_step_is_422(api: httpx.Client) -> None:
    steps = [
        {"name": "one", "capability": "generate", "input": {"x": "$steps.two.output"}},
        {"name": "two", "capability": "review"},
    ]
    body = {"strategy": "chain", "task": {"type": "generate"}, "params": {"steps": steps}}
    response = api.post("/api/v1/sessions", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "params.steps[0].input"
    assert "'two'" in response.json()["detail"]


def test_unknown_agents_are_422_naming_them(api: httpx.Client) -> None:
    body = word_count_session(["a b"])
    body["participants"] = {"agent_ids": ["agent-1", "ghost-7", "ghost-9"]}
    response = api.post("/api/v1/sessions", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["detail"] == "unknown agents: ghost-7, ghost-9"
    assert problem["errors"][0]["field"] == "participants.agent_ids"


def test_too_few_matching_agents_is_422_naming_the_shortfall(api: httpx.Client) -> None:
    body = {
        "strategy": "consensus",
        "task": {"type": "vote", "capabilities": ["vote"], "payload": {}},
        "participants": {"capabilities": ["rare"], "count": 3},
    }
    response = api.post("/api/v1/sessions", json=body)
    assert response.status_code == 422
    assert response.json()["detail"] == "consensus needs 3 participants with [rare, vote]; 2 are connected"


def test_cancel_cancels_the_open_subtasks(api: httpx.Client) -> None:
    body = word_count_session(text_lines(100, seed=2), "slow-word-count", chunk_size=10, max_parallel=4)
    body["task"]["payload"]["delay_ms"] = 20_000
    created = create(api, body)
    before = wait_until(api, created["id"], lambda s: any(t["status"] == "running" for t in s["subtasks"]))
    running = next(t for t in before["subtasks"] if t["status"] == "running")

    response = api.post(f"/api/v1/sessions/{created['id']}/cancel")
    assert response.status_code == 200
    session = response.json()
    assert session["status"] == "cancelled"
    assert session["error"]["code"] == "cancelled"
    statuses = Counter(s["status"] for s in session["subtasks"])
    assert statuses == {"cancelled": 4}
    assert api.post(f"/api/v1/sessions/{created['id']}/cancel").status_code == 409
    # The running assignment ended as cancelled (its agent is sent a cancel), not left to finish.
    assignments = api.get(f"/api/v1/tasks/{running['task_id']}/assignments").json()["items"]
    assert [a["status"] for a in assignments] == ["cancelled"]


def test_a_tiny_budget_stops_the_session_with_budget_exceeded(api: httpx.Client) -> None:
    body = word_count_session(text_lines(100, seed=3), chunk_size=10, max_parallel=1)
    body["budget"] = {"max_cost": 0.000001}
    created = create(api, body)
    assert created["budget"] == 0.000001
    session = wait_end(api, created["id"])
    assert session["status"] == "failed"
    assert session["error"]["code"] == "budget_exceeded"
    assert session["cost"] >= 0.000001
    assert len(session["subtasks"]) < 10
    assert not [s for s in session["subtasks"] if s["status"] in OPEN]


def test_a_session_past_its_timeout_fails_with_timed_out(api: httpx.Client) -> None:
    body = word_count_session(text_lines(20, seed=4), "slow-word-count", chunk_size=10)
    body["task"]["payload"]["delay_ms"] = 20_000
    body["timeout"] = "1s"
    session = wait_end(api, create(api, body)["id"])
    assert session["status"] == "failed"
    assert session["error"]["code"] == "timed_out"
    assert {s["status"] for s in session["subtasks"]} == {"cancelled"}


def test_events_stream_to_the_outcome_and_resume_after_last_event_id(api: httpx.Client) -> None:
    created = create(api, word_count_session(text_lines(120, seed=5)))
    wait_end(api, created["id"])

    def read(headers: dict[str, str]) -> list[tuple[int, str, dict[str, Any]]]:
        events = []
        with api.stream("GET", f"/api/v1/sessions/{created['id']}/events", headers=headers) as response:
            assert response.status_code == 200
            event_id, kind = 0, ""
            for line in response.iter_lines():
                if line.startswith("id:"):
                    event_id = int(line[3:].strip())
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((event_id, kind, json.loads(line[5:].strip())))
        return events

    events = read({})
    kinds = [kind for _, kind, _ in events]
    assert kinds[0] == "created"
    assert kinds.count("subtask_submitted") == 3
    assert kinds.count("subtask_finished") == 3
    assert kinds[-1] == "finished"
    assert events[-1][2]["data"]["status"] == "succeeded"
    resumed = read({"Last-Event-ID": str(events[2][0])})
    assert [event_id for event_id, _, _ in resumed] == [event_id for event_id, _, _ in events[3:]]
    assert (
        api.get(f"/api/v1/sessions/{created['id']}/events", headers={"Last-Event-ID": "x"}).status_code == 422
    )


def test_list_filters_and_pages(api: httpx.Client) -> None:
    for seed in (6, 7):
        wait_end(api, create(api, word_count_session(text_lines(10, seed=seed)))["id"])
    page = api.get("/api/v1/sessions", params={"strategy": "map_reduce", "status": "succeeded", "limit": 1})
    assert page.status_code == 200
    first = page.json()
    assert len(first["items"]) == 1
    assert first["items"][0]["subtasks"] is None
    second = api.get(
        "/api/v1/sessions",
        params={"strategy": "map_reduce", "status": "succeeded", "limit": 1, "cursor": first["next_cursor"]},
    ).json()
    assert second["items"][0]["id"] != first["items"][0]["id"]
    assert second["items"][0]["created_at"] <= first["items"][0]["created_at"]
    assert api.get("/api/v1/sessions", params={"status": "sleeping"}).status_code == 422
    assert api.get("/api/v1/sessions/00000000-0000-0000-0000-000000000000").status_code == 404


def test_cli_runs_and_watches_a_session(server: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    lines = text_lines(60, seed=8)
    body = word_count_session(lines, chunk_size=20)
    del body["strategy"]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(body))
    command = [sys.executable, "-m", "agentplane", "session", "run", "--strategy", "map_reduce"]
    command += ["--file", str(spec), "--watch", "--url", server.base_url, "--key", server.admin_key]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == counts(lines)
    assert "map-2" in done.stderr  # the live table's last frame


def test_sessions_finished_are_counted_by_strategy_and_status(
    server: ServerProcess, api: httpx.Client
) -> None:
    wait_end(api, create(api, word_count_session(text_lines(10, seed=10)))["id"])
    slow = word_count_session(text_lines(10, seed=11), "slow-word-count")
    slow["task"]["payload"]["delay_ms"] = 20_000
    assert api.post(f"/api/v1/sessions/{create(api, slow)['id']}/cancel").status_code == 200
    wanted = [
        'agentplane_sessions_finished_total{status="succeeded",strategy="map_reduce"}',
        'agentplane_sessions_finished_total{status="cancelled",strategy="map_reduce"}',
    ]
    deadline = time.monotonic() + 10  # counted just after the commit, which a client may see first
    while True:
        metrics = httpx.get(f"{server.base_url}/metrics").text
        if all(series in metrics for series in wanted):
            return
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)


def test_a_session_survives_a_server_crash_without_counting_a_chunk_twice(
    server: ServerProcess, api: httpx.Client, fleet: AgentFleet
) -> None:
    lines = text_lines(400, seed=9)
    body = word_count_session(lines, "slow-word-count", chunk_size=20, max_parallel=4)
    body["task"]["payload"]["delay_ms"] = 1500
    created = create(api, body)

    def mid_flight(session: dict[str, Any]) -> bool:
        statuses = Counter(t["status"] for t in session["subtasks"])
        return statuses["succeeded"] >= 4 and statuses["running"] > 0

    # A whole wave has finished and the next one has just started: chunks are done, others are mid-lease.
    wait_until(api, created["id"], mid_flight)
    server.kill()
    server.start()
    fleet.wait_active()
    with server.client() as client:
        session = wait_end(client, created["id"], timeout=120)
        assert session["status"] == "succeeded", session["error"]
        assert session["result"] == counts(lines)
        keys = [s["key"] for s in session["subtasks"]]
        assert sorted(keys) == sorted(f"map-{i}" for i in range(20))  # one task per chunk, no repeats
        assert {s["status"] for s in session["subtasks"]} == {"succeeded"}
        tasks = client.get("/api/v1/tasks", params={"session_id": created["id"], "limit": 500}).json()[
            "items"
        ]
        assert Counter(task["status"] for task in tasks) == {"succeeded": 20}
        # Chunks in flight at the crash were handed over to their agents' new sockets (the SDK names what it
        # still holds) or, past the grace period, leased again: either way each is counted once (above).
