"""A real `agentplane serve` process on a free port, against a test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.child import ChildProcess

ADMIN_KEY = "ap_test_admin_key_for_the_suite_only_000000"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess(ChildProcess):
    stop_timeout = 15.0

    def __init__(
        self,
        database_url: str,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.extra_env = env or {}
        self.args = args or []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/agents"
        self.admin_key = ADMIN_KEY
        self.log_path = (log_dir or Path("/tmp")) / f"agentplane-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "AGENTPLANE_ADMIN_KEY": self.admin_key,
                "AGENTPLANE_PORT": str(self.port),
                "AGENTPLANE_REPLICA_ID": f"test-{self.port}",
                "AGENTPLANE_LOG_LEVEL": "info",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agentplane", "serve", *self.args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0)

    def async_client(self, key: str | None = None, timeout: float = 30.0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def submit_batch(self, capability: str, count: int = 1, **fields: Any) -> list[str]:
        """Submit ``count`` tasks of type and capability ``capability`` as the admin; their ids in order."""
        tasks = [
            {"type": capability, "capabilities": [capability], "payload": {"n": n}, **fields}
            for n in range(count)
        ]
        async with self.async_client() as client:
            response = await client.post("/api/v1/tasks:batch", json={"tasks": tasks})
        assert response.status_code == 201, response.text
        return [task["id"] for task in response.json()["tasks"]]

    async def task(self, task_id: str) -> dict[str, Any]:
        async with self.async_client() as client:
            return dict((await client.get(f"/api/v1/tasks/{task_id}")).json())

    def create_key(self, scope: str, name: str = "test") -> str:
        with self.client() as client:
            response = client.post("/api/v1/keys", json={"name": name, "scopes": [scope]})
            response.raise_for_status()
            return str(response.json()["secret"])
