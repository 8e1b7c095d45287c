"""A frame the database refuses for a transient reason is never poison; a poison result whose usage is the
problem keeps its status; counters saturate. Real server, real sockets, and the database's refusals made
real by a trigger on `assignments` that the tests switch on (SQLSTATE 40001 serialization failure, 25006
read-only after a failover, 22023/22003 data errors).

Before: every database error but a lost connection counted as poison, so a deadlock, a statement timeout or a
read-only primary turned a good `succeeded` result into `failed/invalid_result`; a fallback that could not be
written answered `invalid_result` without an `ack`; a counter at its maximum failed every later result."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from tests.support import sql
from tests.support.polling import eventually_async
from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent

SERVER_ENV = {"AGENT_HEALTH_CHECK_INTERVAL": "60s", "AGENT_MAX_ATTEMPTS": "1"}
INT_MAX = 2**63 - 1

TRAP = """
CREATE TABLE IF NOT EXISTS trap_on (kind text PRIMARY KEY);
CREATE SEQUENCE IF NOT EXISTS trap_serialization;
CREATE OR REPLACE FUNCTION trap() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text := CASE WHEN jsonb_typeof(NEW.output) = 'object' THEN NEW.output->>'trap' END;
BEGIN
    IF NEW.error->>'code' = 'invalid_result' AND EXISTS (SELECT 1 FROM trap_on t WHERE t.kind = 'fallback')
    THEN
        RAISE EXCEPTION 'trap: the fallback meets a read-only database' USING ERRCODE = '25006';
    END IF;
    IF NEW.status = 'rejected' AND NEW.reason = 'trap' THEN
        RAISE EXCEPTION 'trap: read-only' USING ERRCODE = '25006';
    END IF;
    IF NEW.input_tokens = 424242 THEN
        RAISE EXCEPTION 'trap: usage refused' USING ERRCODE = '22003';
    END IF;
    IF kind = 'serialization' AND nextval('trap_serialization') <= 2 THEN
        RAISE EXCEPTION 'trap: could not serialize access' USING ERRCODE = '40001';
    END IF;
    IF kind = 'readonly' AND EXISTS (SELECT 1 FROM trap_on t WHERE t.kind = 'readonly') THEN
        RAISE EXCEPTION 'trap: cannot execute UPDATE in a read-only transaction' USING ERRCODE = '25006';
    END IF;
    IF kind = 'poison' THEN
        RAISE EXCEPTION 'trap: poison' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS trap ON assignments;
CREATE TRIGGER trap BEFORE UPDATE ON assignments FOR EACH ROW EXECUTE FUNCTION trap();
"""


@pytest.fixture(scope="module")
async def trap(database_url: str) -> str:
    await sql.execute(database_url, TRAP)
    return database_url


@pytest.fixture(scope="module")
def agent_key(server: ServerProcess) -> str:
    return server.create_key("agent", name="transient-agents")


async def status_is(server: ServerProcess, task_id: str, *statuses: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await server.task(task_id)
        return body if body["status"] in statuses else None

    found = await eventually_async(check)
    assert found is not None
    return found


def result(assign: dict[str, Any], output: Any, **usage: Any) -> dict[str, Any]:
    return {
        "type": "result",
        "assignment_id": assign["assignment_id"],
        "status": "succeeded",
        "output": output,
        "usage": usage or {"input_tokens": 3, "output_tokens": 4},
    }


async def frames_until_close(agent: RawAgent, timeout: float = 15) -> tuple[list[dict[str, Any]], int | None]:
    frames: list[dict[str, Any]] = list(agent.backlog)
    agent.backlog.clear()
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(agent.ws.recv(), timeout)))
    except websockets.ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd else None


async def test_a_serialization_failure_is_tried_again_not_recorded_as_poison(
    server: ServerProcess, agent_key: str, trap: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["serialization"])
    try:
        (task_id,) = await server.submit_batch("serialization")
        assign = await agent.expect("assign")
        await agent.send(result(assign, {"trap": "serialization"}))  # refused twice with 40001, then fine
        assert (await agent.expect("ack"))["assignment_id"] == assign["assignment_id"]
        done = await status_is(server, task_id, "succeeded", "failed")
        assert done["status"] == "succeeded", done
        assert done["result"] == {"trap": "serialization"}
        assert not [frame for frame in agent.backlog if frame["type"] == "error"]
    finally:
        await agent.close()


async def test_a_result_a_read_only_database_refuses_closes_1013_and_is_resent(
    server: ServerProcess, agent_key: str, trap: str
) -> None:
    await sql.execute(trap, "INSERT INTO trap_on VALUES ('readonly') ON CONFLICT DO NOTHING")
    agent = await RawAgent.connect(server.ws_url, agent_key, agent_id="read-only-1", capabilities=["ro"])
    (task_id,) = await server.submit_batch("ro", max_attempts=2)
    assign = await agent.expect("assign")
    frame = result(assign, {"trap": "readonly"})
    await agent.send(frame)
    frames, code = await frames_until_close(agent)
    assert code == 1013  # not recorded: reconnect and resend
    assert [f for f in frames if f["type"] in {"error", "ack"}] == [], frames
    await sql.execute(trap, "DELETE FROM trap_on WHERE kind = 'readonly'")  # the new primary is up

    again = await RawAgent.connect(server.ws_url, agent_key, agent_id="read-only-1", capabilities=["ro"])
    try:
        await again.send(frame)  # its socket closed, so the assignment was requeued: ignored, acknowledged
        assert (await again.expect("ack"))["assignment_id"] == assign["assignment_id"]
        retry = await again.expect("assign")  # the second attempt
        assert retry["task_id"] == task_id
        await again.complete(retry)
        done = await status_is(server, task_id, "succeeded", "failed")
        assert done["status"] == "succeeded", done
    finally:
        await again.close()


async def test_a_fallback_that_cannot_be_written_never_answers_invalid_result(
    server: ServerProcess, agent_key: str, trap: str
) -> None:
    await sql.execute(trap, "INSERT INTO trap_on VALUES ('fallback') ON CONFLICT DO NOTHING")
    try:
        agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["fallback"])
        (task_id,) = await server.submit_batch("fallback")
        assign = await agent.expect("assign")
        await agent.send(result(assign, {"trap": "poison"}))
        frames, code = await frames_until_close(agent)
        assert code == 1013
        assert [f for f in frames if f["type"] in {"error", "ack"}] == [], frames
        body = await server.task(task_id)
        assert (body.get("error") or {}).get("code") != "invalid_result", body
    finally:
        await sql.execute(trap, "DELETE FROM trap_on WHERE kind = 'fallback'")


async def test_a_result_refused_for_its_usage_is_recorded_without_it(
    server: ServerProcess, agent_key: str, trap: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["usage-refused"])
    try:
        (task_id,) = await server.submit_batch("usage-refused")
        assign = await agent.expect("assign")
        await agent.send(result(assign, {"answer": 42}, input_tokens=424242, output_tokens=1))
        assert (await agent.expect("ack"))["assignment_id"] == assign["assignment_id"]
        done = await status_is(server, task_id, "succeeded", "failed")
        assert (done["status"], done["result"]) == ("succeeded", {"answer": 42}), done
        assert done["usage"]["input_tokens"] == 0
    finally:
        await agent.close()


async def test_a_reject_that_cannot_be_recorded_costs_no_attempt(
    server: ServerProcess, agent_key: str, trap: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["reject-refused"])
    (task_id,) = await server.submit_batch("reject-refused")  # one attempt (AGENT_MAX_ATTEMPTS)
    assign = await agent.expect("assign")
    await agent.send({"type": "reject", "assignment_id": assign["assignment_id"], "reason": "trap"})
    frames, code = await frames_until_close(agent)
    assert code == 1013
    assert [f for f in frames if f["type"] == "error"] == [], frames
    back = await status_is(server, task_id, "pending", "failed", "timed_out")
    assert back["status"] == "pending", back  # requeued uncharged, not failed with agent_lost


async def test_counters_at_their_maximum_saturate_instead_of_failing_results(
    server: ServerProcess, agent_key: str, trap: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["saturate"], max_concurrency=2)
    try:
        await sql.execute(
            trap, "UPDATE agents SET tokens_processed = $1 WHERE id = $2", INT_MAX - 5, agent.agent_id
        )
        first, second = await server.submit_batch("saturate", 2)
        assigns = {a["task_id"]: a for a in [await agent.expect("assign"), await agent.expect("assign")]}
        await sql.execute(trap, "UPDATE tasks SET input_tokens = $1 WHERE id = $2::uuid", INT_MAX - 5, second)
        for task_id in (first, second):
            await agent.complete(assigns[task_id], input_tokens=2**53, output_tokens=2**53)
        for task_id in (first, second):
            done = await status_is(server, task_id, "succeeded", "failed")
            assert done["status"] == "succeeded", done
        tokens = await sql.fetchval(trap, "SELECT tokens_processed FROM agents WHERE id = $1", agent.agent_id)
        assert tokens == INT_MAX
        task_tokens = await sql.fetchval(trap, "SELECT input_tokens FROM tasks WHERE id = $1::uuid", second)
        assert task_tokens == INT_MAX
    finally:
        await agent.close()


async def test_usage_sums_stay_finite_over_costs_stored_before_the_bound(
    server: ServerProcess, agent_key: str, trap: str
) -> None:
    agent = await RawAgent.connect(server.ws_url, agent_key, capabilities=["huge-cost"], max_concurrency=2)
    try:
        for _ in await server.submit_batch("huge-cost", 2):
            await agent.complete(await agent.expect("assign"))
    finally:
        await agent.close()
    # Rows as the server stored them before costs were bounded (each 1e308: their sum overflows a double).
    await sql.execute(trap, "ALTER TABLE assignments DISABLE TRIGGER trap")
    try:
        await sql.execute(trap, "UPDATE assignments SET cost = 1e308 WHERE agent_id = $1", agent.agent_id)
    finally:
        await sql.execute(trap, "ALTER TABLE assignments ENABLE TRIGGER trap")
    async with server.async_client() as client:
        for group in ("model", "agent", "task_type"):
            response = await client.get("/api/v1/usage", params={"group_by": group})
            assert response.status_code == 200, response.text
            assert response.json()["total"]["cost"] < float("inf")
