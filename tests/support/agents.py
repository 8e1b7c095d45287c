"""Real SDK agents in their own processes (`python -m agentplane agent --demo ...`) for e2e tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.agent_procs import AgentProcess
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
        self.agents: dict[str, AgentProcess] = {}

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        return {
            agent_id: agent.process for agent_id, agent in self.agents.items() if agent.process is not None
        }

    def start(self, agent_id: str, capabilities: Sequence[str], *, max_concurrency: int = 4) -> None:
        extra = [
            "--handler",
            f"vote={HANDLERS}:vote",
            "--handler",
            f"slow-word-count={HANDLERS}:slow_word_count",
        ]
        for capability in capabilities:
            extra += ["--capability", capability]
        agent = AgentProcess(
            self.server.ws_url, self.key, agent_id, max_concurrency=max_concurrency, log_dir=self.log_dir,
            extra_args=extra, env={AGENT_ID_ENV: agent_id}, cwd=PROJECT_ROOT,
        )  # fmt: skip
        self.agents[agent_id] = agent.start()

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
        for agent in self.agents.values():
            agent.kill()  # fixtures, not the system under test: no drain needed
        self.agents.clear()
