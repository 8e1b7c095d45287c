"""What a new user meets at the command line: one line for an unreachable server, one place for a 422, one
URL and one key variable for every command, and `session watch` that says something without a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agentplane.client import Client
from tests.support.agent_procs import AgentProcess
from tests.support.polling import eventually
from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.e2e

NOBODY = "00000000-0000-4000-8000-000000000000"


def agentplane(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
    return subprocess.run(
        [sys.executable, "-m", "agentplane", *args],
        env={**clean, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def demo_agent(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    # Started with AGENTPLANE_KEY only: the one key variable works for the agent command too.
    key = server.create_key("agent", name="cli-demo")
    agent = AgentProcess(server.ws_url, "", "cli-demo", log_dir=tmp_path_factory.mktemp("agent"))
    agent.env = {k: v for k, v in agent.env.items() if k != "AGENTPLANE_AGENT_KEY"} | {"AGENTPLANE_KEY": key}
    agent.start()
    with Client(server.base_url, server.admin_key) as client:
        eventually(lambda: [a for a in client.agents() if a["id"] == "cli-demo"], timeout=30)
    yield agent
    agent.stop()


@pytest.mark.parametrize(
    "command",
    [
        ["task", "submit", "--type", "echo", "--capability", "echo"],
        ["task", "get", NOBODY],
        ["task", "cancel", NOBODY],
        ["task", "watch", NOBODY],
        ["session", "run", "--strategy", "consensus", "--file", "-"],
        ["session", "watch", NOBODY],
        ["session", "cancel", NOBODY],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_an_unreachable_server_is_one_line_and_a_failure(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = agentplane(*command, env={"AGENTPLANE_URL": url, "AGENTPLANE_KEY": "ap_x"}, stdin="{}")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"agentplane: cannot reach {url}"), lines[0]


@pytest.mark.parametrize(
    "command", [["task", "get", NOBODY], ["session", "watch", NOBODY]], ids=lambda command: command[0]
)
def test_an_unreachable_servers_password_is_not_printed(command: list[str]) -> None:
    url = f"http://operator:hunter2@127.0.0.1:{free_port()}"
    done = agentplane(*command, env={"AGENTPLANE_URL": url, "AGENTPLANE_KEY": "ap_x"})
    assert done.returncode == 1
    assert "cannot reach" in done.stderr
    assert "hunter2" not in done.stderr


def test_a_422_is_printed_once(server: ServerProcess) -> None:
    env = {"AGENTPLANE_URL": server.base_url, "AGENTPLANE_KEY": server.create_key("client")}
    done = agentplane(
        "task", "submit", "--type", "echo", "--capability", "echo", "--timeout", "soon", env=env
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("agentplane: 422: timeout"), lines[0]


def test_more_than_one_field_error_lists_the_others(server: ServerProcess) -> None:
    env = {"AGENTPLANE_URL": server.base_url, "AGENTPLANE_KEY": server.create_key("client")}
    spec = {"task": {"type": "echo", "capabilities": ["echo"], "priority": "high", "timeout": "soon"}}
    done = agentplane(
        "session", "run", "--strategy", "consensus", "--file", "-", env=env, stdin=json.dumps(spec)
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("agentplane: 422: "), done.stderr
    assert "(and 1 more)" in lines[0], done.stderr
    # The first error is in the first line; the second follows once; neither is repeated.
    assert len(lines) == 2, done.stderr
    assert lines[1].startswith("  task."), lines[1]


def test_the_url_may_be_the_agent_endpoint_and_the_key_is_one_variable(
    server: ServerProcess, demo_agent: AgentProcess
) -> None:
    key = server.create_key("client")
    with Client(server.base_url, key) as client:
        task = client.submit("echo", ["echo"], {"said": "hi"})
        assert client.wait(task["id"], timeout=30)["status"] == "succeeded"
    # ws://…/ws/agents, as an agent is given it, works for the client commands too.
    done = agentplane("task", "get", task["id"], env={"AGENTPLANE_URL": server.ws_url, "AGENTPLANE_KEY": key})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"said": "hi"}
    # The old agent-side name still works as an alias.
    done = agentplane(
        "task", "get", task["id"], env={"AGENTPLANE_URL": server.base_url, "AGENTPLANE_AGENT_KEY": key}
    )
    assert done.returncode == 0, done.stderr


def test_session_watch_without_a_terminal_prints_progress_lines(
    server: ServerProcess, demo_agent: AgentProcess
) -> None:
    key = server.create_key("client")
    spec = {
        "strategy": "chain",
        "task": {"type": "sleep", "capabilities": [], "payload": {}},
        "params": {
            "steps": [{"name": "nap", "capability": "sleep", "type": "sleep", "input": {"ms": 120_000}}]
        },
    }
    env = {"AGENTPLANE_URL": server.base_url, "AGENTPLANE_KEY": key}
    with Client(server.base_url, key) as client:
        session_id = client.create_session(spec)["id"]
        eventually(
            lambda: [s for s in client.get_session(session_id)["subtasks"] if s["status"] == "running"],
            timeout=30,
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
        # stderr is a pipe here, not a terminal. In order: the watch shows the running session, then the
        # session is cancelled, then the watch shows that and ends.
        watch = subprocess.Popen(
            [sys.executable, "-m", "agentplane", "session", "watch", session_id],
            env={**clean, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watch.stderr is not None
            first = watch.stderr.readline()
            assert first.startswith(f"session {session_id} running"), first
            assert "nap running" in first
            client.cancel_session(session_id)
            out, rest = watch.communicate(timeout=60)
        finally:
            watch.kill()
    assert watch.returncode == 1
    assert json.loads(out)["status"] == "cancelled"
    last = rest.strip().splitlines()[-1]
    assert last.startswith(f"session {session_id} cancelled"), rest


@pytest.mark.parametrize("form", ["http", "ws", "list"])
def test_the_agent_command_reads_agentplane_url(server: ServerProcess, form: str) -> None:
    """`agentplane agent` without --url finds a server on a non-default port through $AGENTPLANE_URL alone:
    the http base, the ws endpoint, or a comma list whose first entry is down."""
    assert server.port != 8080
    url = {
        "http": server.base_url,
        "ws": server.ws_url,
        "list": f"http://127.0.0.1:{free_port()},{server.base_url}",
    }[form]
    agent_id = f"env-url-{form}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
    env = {**clean, "AGENTPLANE_URL": url, "AGENTPLANE_KEY": server.create_key("agent")}
    command = ["agent", "--demo", "--agent-id", agent_id, "--log-level", "warning"]
    agent = subprocess.Popen(
        [sys.executable, "-m", "agentplane", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Client(server.base_url, server.admin_key) as client:
            registered = eventually(
                lambda: [a for a in client.agents() if a["id"] == agent_id and a["status"] == "active"],
                timeout=30,
            )
        assert registered[0]["name"] == "agentplane demo agent"
    finally:
        agent.terminate()
        _, stderr = agent.communicate(timeout=15)
    assert "Traceback" not in stderr, stderr
