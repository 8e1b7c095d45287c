"""Real SDK agents in their own processes (`python -m agentplane agent --demo ...`) for e2e tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.server import ServerProcess
from tests.support.session_handlers import AGENT_ID_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.support.session_handlers"


class AgentFleet:
    """Agent processes for one server. Each serves the demo handlers plus `vote` and `slow-word-count`."""

    def __init__(self, server: ServerProcess, key: str, log_dir: Path) -> None:
        self.server = server
        self.key = key
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, agent_id: str, capabilities: Sequence[str], *, max_concurrency: int = 4) -> None:
        command = [
            sys.executable,
            "-m",
            "agentplane",
            "agent",
            "--demo",
            "--url",
            self.server.ws_url,
            "--key",
            self.key,
            "--agent-id",
            agent_id,
            "--max-concurrency",
            str(max_concurrency),
            "--handler",
            f"vote={HANDLERS}:vote",
            "--handler",
            f"slow-word-count={HANDLERS}:slow_word_count",
            "--log-level",
            "warning",
        ]
        for capability in capabilities:
            command += ["--capability", capability]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
        env[AGENT_ID_ENV] = agent_id
        with open(self.log_dir / f"agent-{agent_id}.log", "ab") as log:
            self.processes[agent_id] = subprocess.Popen(
                command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def log(self, agent_id: str) -> str:
        try:
            return (self.log_dir / f"agent-{agent_id}.log").read_text()[-3000:]
        except OSError:
            return ""

    def wait_active(self, agent_ids: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        """Until every agent shows as active (or busy) in the registry: only then can it be a participant."""
        wanted = set(agent_ids if agent_ids is not None else self.processes)
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        with self.server.client() as client:
            while time.monotonic() < deadline:
                for agent_id, process in self.processes.items():
                    if agent_id in wanted and process.poll() is not None:
                        raise RuntimeError(f"agent {agent_id} exited: {self.log(agent_id)}")
                response = client.get("/api/v1/agents", params={"limit": 500})
                if response.status_code == 200:
                    items = response.json()["items"]
                    seen = {item["id"] for item in items if item["status"] in {"active", "busy"}}
                    if wanted <= seen:
                        return
                time.sleep(0.2)
        raise TimeoutError(f"agents not active after {timeout}s: {sorted(wanted - seen)}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)  # fixtures, not the system under test: no drain needed
        for process in self.processes.values():
            process.wait(10)
        self.processes.clear()
