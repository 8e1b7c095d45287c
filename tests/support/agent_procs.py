"""Demo agents in their own processes (`agentplane agent --demo`), so a test can SIGKILL one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.child import ChildProcess


class AgentProcess(ChildProcess):
    def __init__(
        self,
        ws_url: str,
        key: str,
        agent_id: str,
        *,
        max_concurrency: int = 4,
        model: str = "demo-1",
        log_dir: Path | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.args = [
            sys.executable, "-m", "agentplane", "agent", "--demo",
            "--url", ws_url, "--agent-id", agent_id, "--max-concurrency", str(max_concurrency),
            "--model", model, "--log-level", "warning", *(extra_args or []),
        ]  # fmt: skip
        # The test run's own settings must not leak into the agent.
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
        self.env = {**clean, **(env or {}), "AGENTPLANE_AGENT_KEY": key}
        self.cwd = cwd
        self.log_path = (log_dir or Path("/tmp")) / f"agent-{agent_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        return self
