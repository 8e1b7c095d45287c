"""Seed behaviour over a real server and real sockets: a new agent is checked as it registers, a task may
require a minimum capability version or name fallback models, and a session's budget is capped and shared
out to its subtasks."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.listening import ListeningAgent
from tests.support.polling import eventually_async
from tests.support.server import ServerProcess

SERVER_ENV = {
    # A round would come a minute later: a check now is the newcomer's own.
    "AGENT_HEALTH_CHECK_INTERVAL": "60s",
    "AGENT_COST_LIMIT_PER_SESSION": "1.0",
    "AGENT_RETRY_BACKOFF": "0.1s",
    "AGENTPLANE_REAPER_INTERVAL": "0.2s",
}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="seed-agents")


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_new_agent_is_health_checked_as_it_registers(server: ServerProcess, agent_key: str) -> None:
    newcomer = await ListeningAgent.connect(server.ws_url, agent_key, agent_id="newcomer")
    try:
        async with server.async_client() as client:

            async def checked() -> dict[str, Any] | None:
                view = (await client.get("/api/v1/agents/newcomer")).json()
                return view if view["health_checks"] else None

            view = await eventually_async(checked, timeout=10)
            assert [check["ok"] for check in view["health_checks"]] == [True]
            assert view["last_health_check_at"] == view["health_checks"][0]["at"]
            assert newcomer.pings == 1
            listed = (await client.get("/api/v1/agents", params={"model": "gpt-4"})).json()["items"]
            assert next(a for a in listed if a["id"] == "newcomer")["last_health_check_at"] is not None
    finally:
        await newcomer.close()


async def test_a_task_requiring_a_minimum_version_goes_to_an_agent_declaring_it(
    server: ServerProcess, agent_key: str
) -> None:
    old = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="gen-old", capabilities=[{"name": "gen", "version": "1.1"}]
    )
    new = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="gen-new", capabilities=[{"name": "gen", "version": "1.10"}]
    )
    try:
        async with server.async_client() as client:
            wanted = [
                await submit(client, type="gen", capabilities=["gen"], min_versions={"gen": "1.2"})
                for _ in range(3)
            ]
            assert wanted[0]["min_versions"] == {"gen": "1.2"}
            for task in wanted:  # 3 tasks, each agent has 4 slots: without the minimum both would get some
                assert (await new.next("assign"))["task_id"] == task["id"]
            later = await submit(client, type="gen", capabilities=["gen"], min_versions={"gen": "2"})
            shown = (await client.get(f"/api/v1/tasks/{later['id']}")).json()
            assert shown["waiting"]["reason"] == "no connected capable agent declares gen version 2 or later"
            await client.post(f"/api/v1/tasks/{later['id']}/cancel")
            assert old.frames.empty()
    finally:
        await old.close()
        await new.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"min_versions": {"other": "1.0"}}, "min_versions"),
        ({"min_versions": {"gen": "newest"}}, "min_versions"),
        ({"fallback_models": ["claude-3-haiku"]}, "fallback_models"),
        ({"model": "gpt-4", "fallback_models": []}, "fallback_models"),
    ],
)
async def test_bad_versions_and_fallbacks_are_refused_with_their_field(
    server: ServerProcess, body: dict[str, Any], field: str
) -> None:
    async with server.async_client() as client:
        response = await client.post("/api/v1/tasks", json={"type": "gen", "capabilities": ["gen"], **body})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    assert field in {error["field"].split(".")[0] for error in response.json()["errors"]}


async def test_a_task_falls_back_to_its_next_model_after_a_failed_attempt(
    server: ServerProcess, agent_key: str
) -> None:
    primary = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="fb-primary", capabilities=["fb"]
    )
    backup = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="fb-backup", model="claude-3-haiku", capabilities=["fb"]
    )
    try:
        async with server.async_client() as client:
            task = await submit(
                client,
                type="fb",
                capabilities=["fb"],
                model="gpt-4",
                fallback_models=["claude-3-haiku"],
                timeout=0.5,
                max_attempts=2,
            )
            assert (await primary.next("assign"))["task_id"] == task["id"]  # never answered: it lapses
            second = await backup.next("assign")
            assert second["task_id"] == task["id"]
            assert second["attempt"] == 2
            await backup.send(
                {
                    "type": "result",
                    "assignment_id": second["assignment_id"],
                    "status": "succeeded",
                    "output": 2,
                }
            )
            done = (await client.get(f"/api/v1/tasks/{task['id']}", params={"wait": 10})).json()
            assert done["status"] == "succeeded"
            assignments = (await client.get(f"/api/v1/tasks/{task['id']}/assignments")).json()["items"]
            assert [(a["agent_id"], a["status"]) for a in assignments] == [
                ("fb-primary", "timed_out"),
                ("fb-backup", "succeeded"),
            ]
    finally:
        await primary.close()
        await backup.close()


def map_reduce(budget: float) -> dict[str, Any]:
    return {
        "strategy": "map_reduce",
        "task": {"type": "count", "capabilities": ["budgeted"], "payload": {"lines": ["a", "b"]}},
        "participants": {"capabilities": ["budgeted"]},
        "params": {"split_field": "lines", "chunk_size": 1, "max_parallel": 1, "reducer": "sum"},
        "budget": {"max_cost": budget},
    }


async def test_a_session_budget_is_capped_and_each_subtask_may_spend_what_is_left(
    server: ServerProcess, agent_key: str
) -> None:
    worker = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="budgeted", capabilities=["budgeted"]
    )
    try:
        async with server.async_client() as client:
            refused = await client.post("/api/v1/sessions", json=map_reduce(1000))
            assert refused.status_code == 422
            assert refused.headers["content-type"].startswith(PROBLEM)
            assert [error["field"] for error in refused.json()["errors"]] == ["budget.max_cost"]
            assert "per-session cost limit 1 " in refused.json()["detail"]

            created = await client.post("/api/v1/sessions", json=map_reduce(0.5))
            assert created.status_code == 201, created.text
            first = await worker.next("assign")
            shown = (await client.get(f"/api/v1/tasks/{first['task_id']}")).json()
            assert shown["max_cost"] == pytest.approx(0.5)
            await worker.send(
                {
                    "type": "result",
                    "assignment_id": first["assignment_id"],
                    "status": "succeeded",
                    "output": {"a": 1},
                    "usage": {"cost": 0.2},
                }
            )
            second = await worker.next("assign")
            shown = (await client.get(f"/api/v1/tasks/{second['task_id']}")).json()
            assert shown["max_cost"] == pytest.approx(0.3)
            await client.post(f"/api/v1/sessions/{created.json()['id']}/cancel")
    finally:
        await worker.close()


def priced_map_reduce(budget: float) -> dict[str, Any]:
    body = map_reduce(budget)
    body["task"]["capabilities"] = body["participants"]["capabilities"] = ["pricey"]
    return body


async def test_a_budget_no_capable_agent_can_be_paid_from_ends_the_session(
    server: ServerProcess, agent_key: str
) -> None:
    """claude-3-opus is estimated at 0.045 USD for a task of 1,000 tokens (the default prices): a subtask that
    may spend less is offered to no agent, so the session ends `budget_exceeded` instead of waiting for its
    timeout, at the start and once what is left falls below the estimate."""
    worker = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="pricey", capabilities=["pricey"], model="claude-3-opus"
    )
    try:
        async with server.async_client() as client:
            created = await client.post("/api/v1/sessions", json=priced_map_reduce(0.01))
            assert created.status_code == 201, created.text
            session = created.json()
            assert session["status"] == "failed"
            assert session["error"]["code"] == "budget_exceeded"
            assert "below the estimated cost of every agent" in session["error"]["message"]

            created = await client.post("/api/v1/sessions", json=priced_map_reduce(0.1))
            assert created.status_code == 201, created.text
            first = await worker.next("assign")
            await worker.send(
                {
                    "type": "result",
                    "assignment_id": first["assignment_id"],
                    "status": "succeeded",
                    "output": {"a": 1},
                    "usage": {"cost": 0.07},  # 0.03 left: less than the next subtask's estimate
                }
            )
            session_id = created.json()["id"]
            for _ in range(200):
                session = (await client.get(f"/api/v1/sessions/{session_id}")).json()
                if session["status"] != "running":
                    break
                await asyncio.sleep(0.05)
            assert session["status"] == "failed"
            assert session["error"]["code"] == "budget_exceeded"
            assert session["cost"] == pytest.approx(0.07)
            assert [subtask["status"] for subtask in session["subtasks"]] == ["succeeded"]
    finally:
        await worker.close()


async def test_a_task_no_agent_here_can_take_does_not_hold_back_lower_priority_work(
    server: ServerProcess, agent_key: str
) -> None:
    """A high-priority task that passes the claim but fits no agent (a version nobody declares) is set aside:
    the plain task behind it still runs on the one free slot."""
    solo = await ListeningAgent.connect(
        server.ws_url,
        agent_key,
        agent_id="solo-gen",
        capabilities=[{"name": "solo", "version": "1.0"}],
        max_concurrency=1,
    )
    try:
        async with server.async_client() as client:
            blocker = await submit(
                client, type="solo", capabilities=["solo"], priority=10, min_versions={"solo": "9.0"}
            )
            plain = await submit(client, type="solo", capabilities=["solo"])
            assigned = await solo.next("assign", timeout=15)
            assert assigned["task_id"] == plain["id"]
            assert (await client.get(f"/api/v1/tasks/{blocker['id']}")).json()["status"] == "pending"
            await client.post(f"/api/v1/tasks/{blocker['id']}/cancel")
    finally:
        await solo.close()
