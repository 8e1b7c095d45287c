"""Task lifecycle over a real server and real sockets: validation, routing, results, retries, rejects,
fencing, cancel, leases, waiting and the event stream."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent

SERVER_ENV = {
    "AGENT_RETRY_BACKOFF": "0.1s",
    "AGENTPLANE_REAPER_INTERVAL": "0.2s",
    "AGENT_HEALTH_CHECK_INTERVAL": "30s",
}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="task-agents")


@pytest.fixture(scope="module")
def client_key(server: ServerProcess) -> str:
    return server.create_key("client", name="task-client")


def api(server: ServerProcess, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("type", "work")
    response = await client.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def wait(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    return dict((await client.get(f"/api/v1/tasks/{task_id}", params={"wait": 20})).json())


async def task_count(client: httpx.AsyncClient) -> int:
    return len((await client.get("/api/v1/tasks", params={"limit": 500})).json()["items"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "x", "capabilities": ["a"], "colour": "red"}, "colour"),
        ({"type": "x", "capabilities": "a"}, "capabilities"),
        ({"type": "x", "capabilities": []}, "capabilities"),
        ({"type": "x", "capabilities": ["a"], "timeout": -5}, "timeout"),
        ({"type": "x", "capabilities": ["a"], "timeout": "soon"}, "timeout"),
        ({"type": "x", "capabilities": ["a"], "priority": "high"}, "priority"),
        ({"type": "x", "capabilities": ["a"], "payload": [1, 2]}, "payload"),
        ({"type": "", "capabilities": ["a"]}, "type"),
        ({"capabilities": ["a"]}, "type"),
        ({"type": "x", "capabilities": ["a"], "max_attempts": 0}, "max_attempts"),
    ],
)
async def test_malformed_submissions_are_refused_and_nothing_is_written(
    server: ServerProcess, client_key: str, body: dict[str, Any], field: str
) -> None:
    async with api(server, client_key) as client:
        before = await task_count(client)
        response = await client.post("/api/v1/tasks", json=body)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith(PROBLEM)
        assert field in {error["field"].split(".")[0] for error in response.json()["errors"]}
        assert await task_count(client) == before


async def test_a_ten_megabyte_payload_is_refused(server: ServerProcess, client_key: str) -> None:
    async with api(server, client_key) as client:
        before = await task_count(client)
        body = {"type": "x", "capabilities": ["a"], "payload": {"blob": "x" * 10_000_000}}
        response = await client.post("/api/v1/tasks", json=body)
        assert response.status_code == 413
        assert response.headers["content-type"].startswith(PROBLEM)
        assert await task_count(client) == before


async def test_a_payload_that_cannot_fit_a_frame_names_the_field(
    server: ServerProcess, client_key: str
) -> None:
    async with api(server, client_key) as client:
        response = await client.post(
            "/api/v1/tasks", json={"type": "x", "capabilities": ["a"], "payload": {"blob": "x" * 1_100_000}}
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "payload"


async def test_the_same_idempotency_key_returns_the_same_task(server: ServerProcess, client_key: str) -> None:
    async with api(server, client_key) as client:
        body = {"type": "x", "capabilities": ["nobody-has-this"], "idempotency_key": "order-42"}
        first = await client.post("/api/v1/tasks", json=body)
        second = await client.post("/api/v1/tasks", json=body)
        assert first.status_code == 201
        assert second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        await client.post(f"/api/v1/tasks/{first.json()['id']}/cancel")


async def test_a_batch_is_all_or_nothing_and_in_order(server: ServerProcess, client_key: str) -> None:
    async with api(server, client_key) as client:
        before = await task_count(client)
        bad = {"tasks": [{"type": "x", "capabilities": ["z"]}, {"type": "x", "capabilities": []}]}
        response = await client.post("/api/v1/tasks:batch", json=bad)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"].startswith("tasks.1")
        assert await task_count(client) == before
        good = {"tasks": [{"type": f"t{i}", "capabilities": ["z"], "queue_timeout": 1} for i in range(5)]}
        response = await client.post("/api/v1/tasks:batch", json=good)
        assert response.status_code == 201
        assert [task["type"] for task in response.json()["tasks"]] == [f"t{i}" for i in range(5)]


async def test_each_task_reaches_a_capable_agent(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    agents = {
        name: await RawAgent.connect(
            server.ws_url, agent_key, agent_id=name, capabilities=caps, max_concurrency=20
        )
        for name, caps in {"cap-a": ["alpha"], "cap-b": ["beta"], "cap-ab": ["alpha", "beta"]}.items()
    }
    offered = {"cap-a": {"alpha"}, "cap-b": {"beta"}, "cap-ab": {"alpha", "beta"}}
    try:
        async with api(server, client_key) as client:
            wanted = [["alpha"]] * 4 + [["beta"]] * 4 + [["alpha", "beta"]] * 4
            tasks = [await submit(client, capabilities=caps) for caps in wanted]

            async def serve(name: str, agent: RawAgent) -> list[str]:
                got = []
                while True:
                    try:
                        assign = await agent.expect("assign", timeout=2)
                    except TimeoutError:
                        return got
                    got.append(assign["task_id"])
                    await agent.complete(assign, output={"by": name})

            served = await asyncio.gather(*(serve(n, a) for n, a in agents.items()))
            by_task = {task_id: name for name, ids in zip(agents, served, strict=True) for task_id in ids}
            for task in tasks:
                final = await wait(client, task["id"])
                assert final["status"] == "succeeded"
                assert set(task["capabilities"]) <= offered[by_task[task["id"]]]
                assert final["result"] == {"by": by_task[task["id"]]}
    finally:
        for agent in agents.values():
            await agent.close()


async def test_round_robin_spreads_evenly(server: ServerProcess, agent_key: str, client_key: str) -> None:
    agents = [
        await RawAgent.connect(
            server.ws_url, agent_key, agent_id=f"rr-{i}", capabilities=["rr"], max_concurrency=50
        )
        for i in range(3)
    ]
    try:
        async with api(server, client_key) as client:
            await client.post(
                "/api/v1/tasks:batch",
                json={"tasks": [{"type": "rr", "capabilities": ["rr"], "strategy": "round_robin"}] * 30},
            )
            counts = Counter()
            for agent in agents:
                while True:
                    try:
                        await agent.expect("assign", timeout=1.5)
                    except TimeoutError:
                        break
                    counts[agent.agent_id] += 1
            assert counts == {"rr-0": 10, "rr-1": 10, "rr-2": 10}
    finally:
        for agent in agents:
            await agent.close()


async def test_least_loaded_prefers_the_idle_agent(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    busy = await RawAgent.connect(
        server.ws_url, agent_key, agent_id="ll-busy", capabilities=["ll"], max_concurrency=4
    )
    try:
        async with api(server, client_key) as client:
            for _ in range(2):
                await submit(client, capabilities=["ll"], strategy="least_loaded")
                await busy.expect("assign")  # it holds both
            idle = await RawAgent.connect(
                server.ws_url, agent_key, agent_id="ll-idle", capabilities=["ll"], max_concurrency=4
            )
            try:
                task = await submit(client, capabilities=["ll"], strategy="least_loaded")
                assign = await idle.expect("assign")
                assert assign["task_id"] == task["id"]
                await idle.complete(assign)
            finally:
                await idle.close()
    finally:
        await busy.close()


async def test_a_task_left_over_by_a_full_agent_goes_out_when_that_agent_answers(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    """Two gpu tasks claimed together while the only gpu agent has one slot: the second must follow as soon as
    that agent answers, even while another agent's results keep arriving (each one a wake-up that frees
    capacity but brings no new work)."""
    gpu = await RawAgent.connect(
        server.ws_url, agent_key, agent_id="left-gpu", capabilities=["left-gpu"], max_concurrency=1
    )
    cpu = await RawAgent.connect(
        server.ws_url, agent_key, agent_id="left-cpu", capabilities=["left-cpu"], max_concurrency=40
    )
    try:
        async with api(server, client_key) as client:
            cpu_tasks = [{"type": "cpu", "capabilities": ["left-cpu"]}] * 38
            response = await client.post("/api/v1/tasks:batch", json={"tasks": cpu_tasks})
            assert response.status_code == 201, response.text
            # Two cpu slots left: the next claim may take three tasks and finds the two gpu ones, not full.
            held = [await cpu.expect("assign") for _ in cpu_tasks]
            response = await client.post(
                "/api/v1/tasks:batch", json={"tasks": [{"type": "gpu", "capabilities": ["left-gpu"]}] * 2}
            )
            first, second = (task["id"] for task in response.json()["tasks"])
            assign = await gpu.expect("assign")
            assert assign["task_id"] == first

            async def trickle() -> None:  # results every 100 ms for ~4 s, and no new submissions
                for one in held:
                    await cpu.complete(one)
                    await asyncio.sleep(0.1)

            traffic = asyncio.create_task(trickle())
            try:
                await gpu.complete(assign)
                follow = await gpu.expect("assign", timeout=3)  # well before the trickle ends
                assert follow["task_id"] == second
                assert not traffic.done()
                await gpu.complete(follow)
            finally:
                await traffic
            assert (await wait(client, second))["status"] == "succeeded"
    finally:
        await gpu.close()
        await cpu.close()


async def test_a_task_nobody_can_take_waits_pending_then_times_out(
    server: ServerProcess, client_key: str
) -> None:
    async with api(server, client_key) as client:
        task = await submit(client, capabilities=["unicorn-taming"], queue_timeout=1)
        assert (await client.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "pending"
        final = await wait(client, task["id"])
        assert final["status"] == "timed_out"
        assert final["error"]["code"] == "queue_timeout"


async def test_a_late_result_from_a_superseded_assignment_changes_nothing(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    async with api(server, client_key) as client:
        first = await RawAgent.connect(server.ws_url, agent_key, agent_id="late-1", capabilities=["late"])
        task = await submit(client, capabilities=["late"])
        old = await first.expect("assign")
        await first.close()  # the lease goes back to the queue at once
        second = await RawAgent.connect(server.ws_url, agent_key, agent_id="late-2", capabilities=["late"])
        new = await second.expect("assign")
        assert new["task_id"] == task["id"]
        assert new["attempt"] == 2

        again = await RawAgent.connect(server.ws_url, agent_key, agent_id="late-1", capabilities=["late"])
        await again.send(
            {
                "type": "result",
                "assignment_id": old["assignment_id"],
                "status": "succeeded",
                "output": {"stale": 1},
            }
        )
        assert (await again.expect("ack"))["assignment_id"] == old["assignment_id"]
        assert (await client.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "assigned"

        await second.complete(new, output={"fresh": 2})
        final = await wait(client, task["id"])
        assert final["status"] == "succeeded"
        assert final["result"] == {"fresh": 2}
        history = (await client.get(f"/api/v1/tasks/{task['id']}/assignments")).json()["items"]
        assert [a["status"] for a in history] == ["lost", "succeeded"]
        assert history[0]["output"] == {"stale": 1}  # recorded, and ignored
        await again.close()
        await second.close()


async def test_cancel_reaches_the_agent(server: ServerProcess, agent_key: str, client_key: str) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="cancel-me", capabilities=["slow"])
    try:
        async with api(server, client_key) as client:
            task = await submit(client, capabilities=["slow"])
            assign = await agent.expect("assign")
            await agent.send({"type": "accept", "assignment_id": assign["assignment_id"]})
            response = await client.post(f"/api/v1/tasks/{task['id']}/cancel")
            assert response.status_code == 200
            assert response.json()["status"] == "cancelled"
            cancel = await agent.expect("cancel")
            assert cancel["assignment_id"] == assign["assignment_id"]
            again = await client.post(f"/api/v1/tasks/{task['id']}/cancel")
            assert again.status_code == 409
            assert again.headers["content-type"].startswith(PROBLEM)
    finally:
        await agent.close()


async def test_a_reject_goes_elsewhere_without_charging_an_attempt(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    picky = await RawAgent.connect(server.ws_url, agent_key, agent_id="rej-a", capabilities=["rej"])
    try:
        async with api(server, client_key) as client:
            task = await submit(client, capabilities=["rej"])
            offered = await picky.expect("assign")
            await picky.send({"type": "reject", "assignment_id": offered["assignment_id"], "reason": "busy"})
            willing = await RawAgent.connect(server.ws_url, agent_key, agent_id="rej-b", capabilities=["rej"])
            try:
                assign = await willing.expect("assign")
                assert assign["task_id"] == task["id"]
                assert assign["attempt"] == 1
                await willing.complete(assign)
            finally:
                await willing.close()
            final = await wait(client, task["id"])
            assert final["status"] == "succeeded"
            assert final["agent_id"] == "rej-b"
            assert final["attempt"] == 1
    finally:
        await picky.close()


async def test_retryable_failures_retry_with_backoff_then_fail_for_good(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="flaky", capabilities=["flaky"])
    try:
        async with api(server, client_key) as client:
            task = await submit(client, capabilities=["flaky"], max_attempts=3)
            for attempt in (1, 2, 3):
                assign = await agent.expect("assign")
                assert assign["attempt"] == attempt
                await agent.fail(
                    assign, {"code": "overloaded", "message": f"try {attempt}", "retryable": True}
                )
                await agent.expect("ack")
            final = await wait(client, task["id"])
            assert final["status"] == "failed"
            assert final["error"]["message"] == "try 3"
            events = (await client.get(f"/api/v1/tasks/{task['id']}/events")).text
            assert events.count("retrying after") == 2
    finally:
        await agent.close()


async def test_a_retry_can_succeed_and_a_non_retryable_failure_is_final(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="second-try", capabilities=["st"])
    try:
        async with api(server, client_key) as client:
            task = await submit(client, capabilities=["st"])
            assign = await agent.expect("assign")
            await agent.fail(assign, {"code": "rate_limit", "retryable": True})
            assign = await agent.expect("assign")
            await agent.complete(assign, output={"ok": True})
            assert (await wait(client, task["id"]))["result"] == {"ok": True}

            doomed = await submit(client, capabilities=["st"])
            assign = await agent.expect("assign")
            await agent.fail(assign, {"code": "bad_input", "message": "no", "retryable": False})
            final = await wait(client, doomed["id"])
            assert final["status"] == "failed"
            assert final["attempt"] == 1
            assert final["error"]["code"] == "bad_input"
    finally:
        await agent.close()


async def test_an_agent_cannot_act_on_another_agents_assignment(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    owner = await RawAgent.connect(server.ws_url, agent_key, agent_id="owner", capabilities=["mine"])
    intruder = await RawAgent.connect(server.ws_url, agent_key, agent_id="intruder", capabilities=["other"])
    try:
        async with api(server, client_key) as client:
            task = await submit(client, capabilities=["mine"])
            assign = await owner.expect("assign")
            await intruder.send(
                {
                    "type": "result",
                    "assignment_id": assign["assignment_id"],
                    "status": "succeeded",
                    "output": 1,
                }
            )
            error = await intruder.expect("error")
            assert error["code"] == "unknown_assignment"
            assert (await client.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "assigned"
            await owner.complete(assign, output=2)
            assert (await wait(client, task["id"]))["result"] == 2
    finally:
        await owner.close()
        await intruder.close()


async def test_a_lapsed_lease_is_requeued_then_times_out(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="silent", capabilities=["lapse"])
    try:
        async with api(server, client_key) as client:
            task = await submit(client, capabilities=["lapse"], timeout=0.5, max_attempts=2)
            first = await agent.expect("assign")
            cancel = await agent.expect("cancel")
            assert cancel["assignment_id"] == first["assignment_id"]
            second = await agent.expect("assign")
            assert second["attempt"] == 2
            final = await wait(client, task["id"])
            assert final["status"] == "timed_out"
    finally:
        await agent.close()


async def test_a_result_over_the_cost_limit_fails_without_retry(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="spender", capabilities=["spend"])
    try:
        async with api(server, client_key) as client:
            # A small estimate passes routing (gpt-4 at 10 tokens); the reported cost then breaks the cap.
            task = await submit(client, capabilities=["spend"], max_cost=0.01, estimated_tokens=10)
            assign = await agent.expect("assign")
            await agent.complete(assign, output={"essay": "long"}, cost=0.5)
            final = await wait(client, task["id"])
            assert final["status"] == "failed"
            assert final["error"]["code"] == "cost_limit_exceeded"
            assert final["usage"]["cost"] == 0.5
    finally:
        await agent.close()


async def test_events_stream_every_transition_and_resume(
    server: ServerProcess, agent_key: str, client_key: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="narrator", capabilities=["story"])
    try:
        async with api(server, client_key) as client:
            task = await submit(client, capabilities=["story"])
            assign = await agent.expect("assign")
            await agent.send({"type": "accept", "assignment_id": assign["assignment_id"]})
            await agent.send(
                {
                    "type": "progress",
                    "assignment_id": assign["assignment_id"],
                    "progress": 0.5,
                    "message": "half",
                }
            )
            await agent.complete(assign)
            stream = (await client.get(f"/api/v1/tasks/{task['id']}/events")).text
            kinds = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: ")]
            assert kinds == ["transition", "transition", "transition", "progress", "transition"]
            assert '"to":"succeeded"' in stream
            ids = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("id: ")]
            resumed = (
                await client.get(f"/api/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": ids[2]})
            ).text
            assert [line for line in resumed.splitlines() if line.startswith("id: ")] == [
                f"id: {i}" for i in ids[3:]
            ]
    finally:
        await agent.close()


async def test_list_filters_and_pages(server: ServerProcess, client_key: str) -> None:
    async with api(server, client_key) as client:
        created = (
            await client.post(
                "/api/v1/tasks:batch",
                json={"tasks": [{"type": "pageme", "capabilities": ["none"], "queue_timeout": 30}] * 7},
            )
        ).json()["tasks"]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"type": "pageme", "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/api/v1/tasks", params=params)).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == sorted(task["id"] for task in created)
        assert len(seen) == len(set(seen))
        bad = await client.get("/api/v1/tasks", params={"cursor": "nonsense"})
        assert bad.status_code == 422
        assert (await client.get("/api/v1/tasks", params={"status": "exploded"})).status_code == 422
        for task in created:
            await client.post(f"/api/v1/tasks/{task['id']}/cancel")


async def test_unknown_tasks_are_404_problems(server: ServerProcess, client_key: str) -> None:
    async with api(server, client_key) as client:
        missing = "00000000-0000-4000-8000-000000000000"
        for path in (
            f"/api/v1/tasks/{missing}",
            f"/api/v1/tasks/{missing}/events",
            f"/api/v1/tasks/{missing}/assignments",
        ):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"].startswith(PROBLEM)
