"""`agentplane serve --workers N`: N replica processes on one port, one fleet, each its own replica id."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support import sql
from tests.support.server import ServerProcess
from tests.support.wsclient import RawAgent


@pytest.fixture(scope="module")
def workers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(database_url, log_dir=tmp_path_factory.mktemp("logs"), args=["--workers", "2"])
    server.start(timeout=60)
    yield server
    server.stop()


async def replica_ids(database_url: str) -> list[str]:
    connection = await sql.connect(database_url)
    try:
        return sorted(row["id"] for row in await connection.fetch("SELECT id FROM replicas"))
    finally:
        await connection.close()


async def test_two_workers_are_two_replicas_serving_one_fleet(
    workers: ServerProcess, database_url: str
) -> None:
    for _ in range(100):
        ids = await replica_ids(database_url)
        if len(ids) == 2:
            break
        await asyncio.sleep(0.1)
    assert ids == [f"test-{workers.port}/0", f"test-{workers.port}/1"]
    agent_key = workers.create_key("agent", name="worker-agents")
    # Connections land on either process; every agent is reachable, whichever replica took the submit.
    agents = [
        await RawAgent.connect(workers.ws_url, agent_key, agent_id=f"w{index}", capabilities=["spread"])
        for index in range(4)
    ]
    try:
        async with httpx.AsyncClient(
            base_url=workers.base_url, headers={"Authorization": f"Bearer {workers.admin_key}"}, timeout=30
        ) as client:
            ids = []
            for index in range(8):
                response = await client.post(
                    "/api/v1/tasks",
                    json={
                        "type": "spread",
                        "capabilities": ["spread"],
                        "payload": {"i": index},
                        "agent_ids": [f"w{index % 4}"],
                    },
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            for agent in agents:
                for _ in range(2):
                    await agent.complete(await agent.expect("assign", timeout=15))
            for task_id in ids:
                task = (await client.get(f"/api/v1/tasks/{task_id}", params={"wait": 15})).json()
                assert task["status"] == "succeeded"
    finally:
        for agent in agents:
            await agent.close()


def test_a_port_in_use_fails_before_anything_starts(workers: ServerProcess, database_url: str) -> None:
    clash = ServerProcess(database_url, args=["--workers", "2"])
    env = clash.env() | {"AGENTPLANE_PORT": str(workers.port), "AGENTPLANE_REPLICA_ID": "clash"}
    result = subprocess.run(
        [sys.executable, "-m", "agentplane", "serve", "--workers", "2"],
        env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert b"cannot listen" in result.stderr
    # Nothing of the clashing process reached the database: the live replicas are untouched.
    assert workers.client().get("/readyz").status_code == 200
