"""Child processes the harness owns: the server (or the echo server) and the agent processes.

Every child is started in its own session, so a Ctrl-C in the terminal reaches only the harness, which
then stops the children itself in a known order (agents first, then the server, which stops its embedded
Postgres on SIGTERM). Every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without the caller's AGENT_*/AGENTPLANE_* settings (they would skew a preset),
    plus `extra`. DATABASE_URL is kept: it selects an external Postgres on purpose."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
    env.update(extra)
    return env


class Child:
    """One subprocess with its log file; stop() is idempotent: SIGTERM, a bounded wait, then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        log_path: Path,
        stdin_pipe: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=PROJECT_ROOT,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def close_stdin(self) -> None:
        stdin: IO[bytes] | None = self.process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()

    def wait(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, timeout: float = 20.0) -> None:
        self.close_stdin()
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            if not self.wait(timeout):
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.wait(5.0)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_ready(child: Child | None, url: str, timeout: float) -> None:
    """Poll `url` until it answers 200; fail early if the child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.1)
    tail = child.log_tail() if child is not None else ""
    raise RuntimeError(f"{url} not ready within {timeout:.0f} s\n{tail}")


def postgres_pid(data_dir: Path) -> int | None:
    """The embedded postmaster's pid (first line of postmaster.pid). pg_ctl daemonizes it, so it is not
    a child of the server process and the CPU sampler has to be told about it."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    return None


def raise_fd_limit() -> int:
    """Lift our soft open-file limit to the hard one; children inherit it (10,000 sockets need it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return int(hard)
    return int(soft)
