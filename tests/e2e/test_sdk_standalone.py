"""An agent machine installs the SDK alone: a fresh virtualenv gets `pip install <this checkout>` (the base
install, no extras: its real dependencies, from PyPI or pip's cache) and its agent registers with a real
server and completes a task, with no server module installed or loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.polling import eventually
from tests.support.server import ServerProcess

ROOT = Path(__file__).parents[2]
SERVER_MODULES = ("fastapi", "starlette", "sqlalchemy", "asyncpg", "pgserver", "alembic", "uvicorn", "app")
HANDLERS = """
import sys

SERVER_MODULES = {modules!r}


def loaded(ctx):
    return {{"server_modules": sorted(m for m in sys.modules if m.split(".")[0] in SERVER_MODULES),
             "words": len(ctx.payload["text"].split())}}
"""


def fresh_sdk_venv(root: Path) -> Path:
    """A virtualenv holding only the base install of a copy of this checkout (copied, so the build writes
    nothing into the shared working tree); pip comes from the suite's own environment."""
    source = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("agentplane", "app", "bench"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(source)],
        check=True,
        capture_output=True,
    )
    return python


@pytest.mark.timeout(400)
def test_an_agent_from_the_sdk_alone_registers_and_completes_a_task(
    server: ServerProcess, tmp_path: Path
) -> None:
    python = fresh_sdk_venv(tmp_path)
    for module in ("fastapi", "sqlalchemy", "asyncpg", "pgserver"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, cwd=tmp_path)
        assert probe.returncode != 0, f"{module} is installed in the SDK's venv"
    refused = subprocess.run(
        [str(python), "-m", "agentplane", "serve"], capture_output=True, text=True, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "pip install 'agentplane[server]'" in refused.stderr

    (tmp_path / "standalone_handlers.py").write_text(HANDLERS.format(modules=set(SERVER_MODULES)))
    key = server.create_key("agent", name="standalone")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_", "PYTHON"))}
    with open(tmp_path / "agent.log", "wb") as log:
        agent = subprocess.Popen(
            [str(python), "-m", "agentplane", "agent", "--url", server.base_url, "--model", "gpt-4",
             "--agent-id", "standalone-1", "--handler", "count=standalone_handlers:loaded"],
            env={**env, "AGENTPLANE_KEY": key}, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with server.client() as client:
            eventually(lambda: _registered(client), timeout=60)
            body = {"type": "count", "capabilities": ["count"], "payload": {"text": "one two three"}}
            task = client.post("/api/v1/tasks", json=body).json()
            done = eventually(lambda: _finished(client, task["id"]), timeout=60)
        assert done["status"] == "succeeded", (tmp_path / "agent.log").read_text()
        assert done["agent_id"] == "standalone-1"
        assert done["result"] == {"server_modules": [], "words": 3}
    finally:
        agent.terminate()
        agent.wait(15)


def _registered(client: httpx.Client) -> bool:
    response = client.get("/api/v1/agents/standalone-1")
    return response.status_code == 200 and response.json()["status"] in {"active", "busy"}


def _finished(client: httpx.Client, task_id: str) -> dict[str, object] | None:
    task = dict(client.get(f"/api/v1/tasks/{task_id}").json())
    return task if task["status"] in {"succeeded", "failed", "cancelled", "timed_out"} else None
