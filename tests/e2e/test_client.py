"""The Python client and `agentplane task` against a real server and a demo agent process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentplane.client import ApiError, Client
from tests.support.agent_procs import AgentProcess
from tests.support.polling import eventually
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def demo_agent(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    key = server.create_key("agent", name="client-demo")
    agent = AgentProcess(server.ws_url, key, "client-demo", log_dir=tmp_path_factory.mktemp("agent")).start()
    with Client(server.base_url, server.admin_key) as client:
        eventually(lambda: [a for a in client.agents() if a["status"] == "active"], timeout=30)
    yield agent
    agent.stop()


def test_submit_wait_and_stream_events(server: ServerProcess, demo_agent: AgentProcess) -> None:
    with Client(server.base_url, server.create_key("client")) as client:
        task = client.submit("text-stats", ["text-stats"], {"text": "One two. Three four five."})
        done = client.wait(task["id"], timeout=30)
        assert done["status"] == "succeeded"
        assert done["result"]["words"] == 5
        events = list(client.events(task["id"]))
        assert [e["data"]["to"] for e in events if e["event"] == "transition"][-1] == "succeeded"
        resumed = list(client.events(task["id"], last_event_id=events[0]["id"]))
        assert [e["id"] for e in resumed] == [e["id"] for e in events[1:]]


def test_errors_carry_the_problem(server: ServerProcess) -> None:
    with Client(server.base_url, server.create_key("client")) as client:
        with pytest.raises(ApiError) as info:
            client.submit("x", [])
        assert info.value.status == 422
        assert info.value.problem["errors"][0]["field"] == "capabilities"


def _cli(server: ServerProcess, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTPLANE_URL": server.base_url, "AGENTPLANE_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "agentplane", "task", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_task_submit_wait_prints_the_result(
    server: ServerProcess, demo_agent: AgentProcess, tmp_path: Path
) -> None:
    key = server.create_key("client")
    result = _cli(
        server, key, "submit", "--type", "word-count", "--capability", "word-count",
        "--payload", '{"text": "to be or not to be"}', "--wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"to": 2, "be": 2, "or": 1, "not": 1}


def test_task_submit_reports_bad_input_in_one_place(server: ServerProcess) -> None:
    result = _cli(
        server, server.create_key("client"), "submit", "--type", "x", "--capability", "a", "--payload", "["
    )
    assert result.returncode == 2
    assert "not JSON" in result.stderr
    result = _cli(server, "ap_wrong", "get", "00000000-0000-4000-8000-000000000000")
    assert result.returncode == 1
    assert "401" in result.stderr
