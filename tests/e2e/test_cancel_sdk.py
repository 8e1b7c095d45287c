"""Cancel reaches the agent: an SDK handler running in its own process sees the cancellation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.polling import eventually
from tests.support.server import ServerProcess


def test_cancel_reaches_the_handler(server: ServerProcess, tmp_path: Path) -> None:
    key = server.create_key("agent", name="cancel-sdk")
    log = tmp_path / "agent.log"
    command = [
        sys.executable, "-m", "agentplane", "agent", "--url", server.ws_url, "--model", "gpt-4",
        "--agent-id", "cancel-sdk", "--handler", "cancellable=tests.support.cancel_handler:cancellable",
        "--log-level", "warning",
    ]  # fmt: skip
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            command, env={**os.environ, "AGENTPLANE_AGENT_KEY": key}, stdout=out, stderr=out
        )
    try:
        with server.client() as client:
            eventually(lambda: client.get("/api/v1/agents/cancel-sdk").status_code == 200, timeout=30)
            marker = tmp_path / "cancel.mark"
            task = client.post(
                "/api/v1/tasks",
                json={
                    "type": "cancellable",
                    "capabilities": ["cancellable"],
                    "payload": {"marker": str(marker)},
                },
            ).json()
            eventually(lambda: marker.with_suffix(".started").exists(), timeout=30)
            cancelled = client.post(f"/api/v1/tasks/{task['id']}/cancel").json()
            assert cancelled["status"] == "cancelled"
            eventually(marker.exists, timeout=15)
            assert marker.read_text().startswith("cancelled")
            assert "cancelled=True" in marker.read_text()
            final = client.get(f"/api/v1/tasks/{task['id']}").json()
            assert final["status"] == "cancelled"
            assert final["result"] is None
    finally:
        agent.terminate()
        agent.wait(15)
