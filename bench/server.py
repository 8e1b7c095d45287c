"""The server under test: `python -m agentplane serve` started here, or one already running (--url)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.procs import Child, clean_env, free_port, postgres_pid, python_module, wait_ready

_READY_TIMEOUT = 90.0  # initdb + migrations on a cold temp folder take ~6 s here; slow disks more


@dataclass
class Server:
    base_url: str
    admin_key: str
    child: Child | None = None
    data_dir: Path | None = None  # our temp AGENTPLANE_DATA_DIR, removed on stop
    external_pid: int | None = None  # an attached server's pid, when it runs on this machine
    _own_dir: bool = field(default=False, repr=False)

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/ws/agents"

    def pids(self) -> list[int]:
        """The server process and its embedded postmaster (when we started them)."""
        pids = [self.child.pid] if self.child is not None else []
        if self.external_pid is not None:
            pids.append(self.external_pid)
        if self.data_dir is not None and (pg := postgres_pid(self.data_dir)) is not None:
            pids.append(pg)
        return pids

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        # One keep-alive pool sized for open-loop bursts; loopback, so no HTTP/2 or compression.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, limits=limits)

    def create_key(self, scope: str, name: str) -> str:
        with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
            response = client.post(
                "/api/v1/keys",
                json={"name": name, "scopes": [scope]},
                headers={"Authorization": f"Bearer {self.admin_key}"},
            )
            response.raise_for_status()
            return str(response.json()["secret"])

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=30.0)  # SIGTERM: uvicorn drains, then the embedded Postgres stops
        if self._own_dir and self.data_dir is not None:
            pg = postgres_pid(self.data_dir)
            if pg is not None and _running(pg):  # the server died without stopping it: stop it ourselves
                with contextlib.suppress(OSError):
                    os.kill(pg, 15)
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def attach(url: str) -> Server:
    """A server somebody else runs; its admin key comes from AGENTPLANE_ADMIN_KEY."""
    key = os.environ.get("AGENTPLANE_ADMIN_KEY")
    if not key:
        raise RuntimeError("--url needs the server's admin key in AGENTPLANE_ADMIN_KEY")
    server = Server(base_url=url.rstrip("/"), admin_key=key)
    wait_ready(None, f"{server.base_url}/readyz", 10.0)
    server.external_pid = _listening_pid(httpx.URL(server.base_url).port or 80)
    return server


def _listening_pid(port: int) -> int | None:
    """The local process listening on `port`, so CPU and RSS can be sampled for an attached server too."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    return None


def start(*, health_interval: float, log_dir: Path, extra_env: dict[str, str] | None = None) -> Server:
    """A fresh server on a free port: embedded Postgres in a temp folder unless DATABASE_URL is set."""
    port = free_port()
    admin_key = "ap_bench_" + secrets.token_hex(20)
    env = {
        "AGENTPLANE_ADMIN_KEY": admin_key,
        "AGENTPLANE_PORT": str(port),
        "AGENTPLANE_REPLICA_ID": f"bench-{port}",
        "AGENTPLANE_LOG_LEVEL": "warning",  # per-agent info lines would cost CPU we are measuring
        "AGENT_HEALTH_CHECK_INTERVAL": f"{health_interval:g}s",
        # 10,000 agents registering at once must not trip the register deadline meant for a lone agent.
        "AGENT_REGISTER_TIMEOUT": "60s",
        **(extra_env or {}),
    }
    data_dir: Path | None = None
    if not os.environ.get("DATABASE_URL"):
        data_dir = Path(tempfile.mkdtemp(prefix="agentplane-bench-"))
        env["AGENTPLANE_DATA_DIR"] = str(data_dir)
    server = Server(base_url=f"http://127.0.0.1:{port}", admin_key=admin_key, data_dir=data_dir)
    server._own_dir = data_dir is not None
    try:
        server.child = Child(
            "server",
            python_module("agentplane", "serve"),
            env=clean_env(env),
            log_path=log_dir / "server.log",
        )
        wait_ready(server.child, f"{server.base_url}/readyz", _READY_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    return server


def start_echo(*, log_dir: Path) -> tuple[Child, int]:
    """The ws-echo baseline server (bench/echo_server.py) under the same uvicorn settings; and its port."""
    port = free_port()
    child = Child(
        "echo-server",
        python_module("bench.echo_server", "--port", str(port)),
        env=clean_env({}),
        log_path=log_dir / "echo-server.log",
    )
    try:
        wait_ready(child, f"http://127.0.0.1:{port}/healthz", 30.0)
    except BaseException:
        child.stop()
        raise
    return child, port
