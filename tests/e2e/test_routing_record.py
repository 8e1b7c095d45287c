"""The routing record over a real server and real sockets: lapses count against the agent and quarantine it
(cool-down, release, a success resets the count); task types route and explain why a task waits."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from typing import Any

import httpx
import pytest

from tests.support.listening import ListeningAgent
from tests.support.polling import eventually_async
from tests.support.server import ServerProcess

SERVER_ENV = {
    "AGENT_QUARANTINE_AFTER": "2",
    "AGENT_QUARANTINE_COOLDOWN": "6s",
    "AGENTPLANE_METRICS_REFRESH": "0.5s",
    "AGENT_HEALTH_CHECK_INTERVAL": "1s",
    "AGENT_RETRY_BACKOFF": "0.1s",
    "AGENTPLANE_REAPER_INTERVAL": "0.2s",
}


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="record-agents")


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def agent_view(client: httpx.AsyncClient, agent_id: str) -> dict[str, Any]:
    return dict((await client.get(f"/api/v1/agents/{agent_id}")).json())


async def lapse_twice(client: httpx.AsyncClient, hung: ListeningAgent, capability: str) -> None:
    """Two tasks the agent takes and never answers: both leases lapse (one attempt each, so they end)."""
    for _ in range(2):
        task = await submit(client, type="t", capabilities=[capability], timeout=0.5, max_attempts=1)
        assigned = await hung.next("assign")
        assert assigned["task_id"] == task["id"]
        ended = await client.get(f"/api/v1/tasks/{task['id']}", params={"wait": 10})
        assert ended.json()["status"] == "timed_out"


async def test_lapsed_leases_fail_the_agent_quarantine_it_and_an_operator_releases_it(
    server: ServerProcess, agent_key: str
) -> None:
    hung = await ListeningAgent.connect(server.ws_url, agent_key, agent_id="hung-1", capabilities=["hang"])
    try:
        async with server.async_client() as client:
            await lapse_twice(client, hung, "hang")

            async def quarantined() -> dict[str, Any] | None:
                view = await agent_view(client, "hung-1")
                return view if view["status"] == "quarantined" else None

            view = await eventually_async(quarantined, timeout=10)
            assert view["metrics"]["tasks_failed"] == 2
            assert view["metrics"]["success_rate"] == 0.0
            assert view["consecutive_lapses"] == 2
            assert view["quarantined_until"] is not None
            listed = (await client.get("/api/v1/agents", params={"status": "quarantined"})).json()
            assert [agent["id"] for agent in listed["items"]] == ["hung-1"]
            metrics = (await client.get("/api/v1/registry/metrics")).json()
            assert metrics["agents_by_status"].get("quarantined") == 1

            async def gauged() -> bool:  # the gauge is refreshed from the registry every few seconds
                gauge = (await client.get("/metrics")).text
                return 'mcp_agents_active{model="gpt-4",status="quarantined"} 1.0' in gauge

            await eventually_async(gauged, timeout=5, interval=0.2)

            # Quarantined, it is offered nothing; the task says why it waits.
            waiting = await submit(client, type="t", capabilities=["hang"], max_attempts=1)
            shown = (await client.get(f"/api/v1/tasks/{waiting['id']}")).json()
            assert shown["status"] == "pending"
            assert "quarantined" in shown["waiting"]["reason"]

            assert (await client.post("/api/v1/agents/hung-1/release")).status_code == 200
            assigned = await hung.next("assign")  # released: the waiting task is its own again
            assert assigned["task_id"] == waiting["id"]
            view = await agent_view(client, "hung-1")
            assert view["status"] == "active"
            assert view["consecutive_lapses"] == 0
            again = await client.post("/api/v1/agents/hung-1/release")
            assert again.status_code == 409
            assert again.headers["content-type"].startswith("application/problem+json")
            # A success resets the count: one lapse after it does not quarantine.
            await hung.send(
                {
                    "type": "result",
                    "assignment_id": assigned["assignment_id"],
                    "status": "succeeded",
                    "output": 1,
                }
            )
            await eventually_async(lambda: _status_of(client, waiting["id"], "succeeded"), timeout=10)
    finally:
        await hung.close()


async def _status_of(client: httpx.AsyncClient, task_id: str, status: str) -> bool:
    return bool((await client.get(f"/api/v1/tasks/{task_id}")).json()["status"] == status)


async def test_a_quarantine_ends_after_its_cool_down_and_reconnecting_does_not_end_it(
    server: ServerProcess, agent_key: str
) -> None:
    hung = await ListeningAgent.connect(server.ws_url, agent_key, agent_id="hung-2", capabilities=["cool"])
    try:
        async with server.async_client() as client:
            await lapse_twice(client, hung, "cool")

            async def status_is(wanted: str) -> bool:
                return bool((await agent_view(client, "hung-2"))["status"] == wanted)

            await eventually_async(lambda: status_is("quarantined"), timeout=10)
            await hung.close()
            hung = await ListeningAgent.connect(
                server.ws_url, agent_key, agent_id="hung-2", capabilities=["cool"]
            )
            assert (await agent_view(client, "hung-2"))["status"] == "quarantined"
            # The cool-down (6 s) passes; the next health round offers it work again.
            await eventually_async(lambda: status_is("active"), timeout=20)
            task = await submit(client, type="t", capabilities=["cool"])
            assert (await hung.next("assign"))["task_id"] == task["id"]
    finally:
        await hung.close()


async def test_an_agent_is_offered_only_its_task_types_and_a_task_no_one_handles_says_why(
    server: ServerProcess, agent_key: str
) -> None:
    reviewer = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="reviewer", capabilities=["typed"], task_types=["review"]
    )
    try:
        async with server.async_client() as client:
            view = await agent_view(client, "reviewer")
            assert view["task_types"] == ["review"]
            listed = (await client.get("/api/v1/agents", params={"capability": "typed"})).json()["items"]
            assert [agent["task_types"] for agent in listed] == [["review"]]

            orphan = await submit(client, type="translate", capabilities=["typed"])
            review = await submit(client, type="review", capabilities=["typed"])
            # The older task comes first in the queue; the agent is offered only the type it handles.
            assert (await reviewer.next("assign"))["task_id"] == review["id"]
            shown = (await client.get(f"/api/v1/tasks/{orphan['id']}")).json()
            assert shown["status"] == "pending"
            assert shown["waiting"]["reason"] == "no connected agent handles type 'translate'"
            assert shown["waiting"]["eligible_agents"] == 0

            nobody = await submit(client, type="review", capabilities=["typed", "rare-skill"])
            shown = (await client.get(f"/api/v1/tasks/{nobody['id']}")).json()
            assert shown["waiting"]["reason"] == "no connected agent has capabilities [typed, rare-skill]"
            # Only a pending task read by id carries it: a list or a finished task does not.
            items = (await client.get("/api/v1/tasks", params={"type": "translate"})).json()["items"]
            assert all(item["waiting"] is None for item in items)
            for task_id in (orphan["id"], nobody["id"]):
                await client.post(f"/api/v1/tasks/{task_id}/cancel")
    finally:
        await reviewer.close()


async def test_a_waiting_task_lists_the_agents_that_refused_it(server: ServerProcess, agent_key: str) -> None:
    picky = await ListeningAgent.connect(server.ws_url, agent_key, agent_id="picky", capabilities=["refused"])
    try:
        async with server.async_client() as client:
            task = await submit(client, type="chore", capabilities=["refused"])
            assigned = await picky.next("assign")
            await picky.send(
                {
                    "type": "reject",
                    "assignment_id": assigned["assignment_id"],
                    "reason": "not my kind of chore",
                }
            )

            async def refused() -> dict[str, Any] | None:
                shown = (await client.get(f"/api/v1/tasks/{task['id']}")).json()
                waiting = shown.get("waiting")
                # Right after the reject the task may still be in its short backoff ("due again at ..."):
                # the refusals are the reason once it is due.
                return (
                    waiting
                    if waiting and waiting["refusals"] and "due again" not in waiting["reason"]
                    else None
                )

            waiting = await eventually_async(refused, timeout=10)
            assert [r["agent_id"] for r in waiting["refusals"]][:1] == ["picky"]
            assert waiting["refusals"][0]["reason"] == "not my kind of chore"
            assert "refused" in waiting["reason"]
            await client.post(f"/api/v1/tasks/{task['id']}/cancel")
    finally:
        await picky.close()


async def test_task_submit_wait_says_why_the_task_waits(server: ServerProcess, agent_key: str) -> None:
    reviewer = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="cli-reviewer", capabilities=["cli-typed"], task_types=["review"]
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
    env = {**clean, "AGENTPLANE_URL": server.base_url, "AGENTPLANE_KEY": server.admin_key}
    command = [sys.executable, "-m", "agentplane", "task", "submit", "--type", "translate"]
    cli = await asyncio.create_subprocess_exec(
        *command,
        "--capability",
        "cli-typed",
        "--wait",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert cli.stderr is not None
        line = (await asyncio.wait_for(cli.stderr.readline(), 30)).decode()
        match = re.fullmatch(r"agentplane: task (\S+) is waiting: (.*)\n", line)
        assert match is not None, line
        assert match[2] == "no connected agent handles type 'translate'"
        async with server.async_client() as client:
            assert (await client.post(f"/api/v1/tasks/{match[1]}/cancel")).status_code == 200
        out, _ = await asyncio.wait_for(cli.communicate(), 30)
        assert cli.returncode == 1
        assert json.loads(out)["status"] == "cancelled"
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
        await reviewer.close()


async def test_one_disconnect_holding_several_tasks_is_one_lapse_not_a_quarantine(
    server: ServerProcess, agent_key: str
) -> None:
    """A redeploy drops an agent holding several tasks: each task is a failure on its record, but the loss is
    one event, one lapse towards quarantine (AGENT_QUARANTINE_AFTER is 2 here)."""
    busy = await ListeningAgent.connect(
        server.ws_url, agent_key, agent_id="busy-1", capabilities=["hold"], max_concurrency=4
    )
    async with server.async_client() as client:
        for _ in range(4):
            await submit(client, type="t", capabilities=["hold"], max_attempts=2)
        for _ in range(4):
            await busy.next("assign")
        await busy.close()  # 1000: the agent is done, its four tasks go back to the queue at once

        async def recorded() -> dict[str, Any] | None:
            view = await agent_view(client, "busy-1")
            return view if view["status"] == "offline" and view["metrics"]["tasks_failed"] == 4 else None

        view = await eventually_async(recorded, timeout=20)
        assert view is not None
        assert view["consecutive_lapses"] == 1
        again = await ListeningAgent.connect(
            server.ws_url, agent_key, agent_id="busy-1", capabilities=["hold"], max_concurrency=4
        )
        try:
            # Not quarantined: it takes its four tasks back at once (busy) or is about to (active).
            assert (await agent_view(client, "busy-1"))["status"] in {"active", "busy"}
        finally:
            await again.close()
