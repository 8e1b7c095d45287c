"""The SDK stands alone: importing it loads none of the server stack (agent machines do not install it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_MODULES = ("fastapi", "starlette", "sqlalchemy", "asyncpg", "pgserver", "alembic", "uvicorn", "app")


@pytest.mark.parametrize(
    "module", ["agentplane.sdk", "agentplane.agent_cli", "agentplane.providers", "agentplane.protocol"]
)
def test_importing_loads_no_server_module(module: str) -> None:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert module in loaded  # the probe really imported it
    server = [name for name in loaded if name.split(".")[0] in SERVER_MODULES]
    assert server == []


def test_server_and_sdk_share_one_protocol() -> None:
    import agentplane.protocol
    import app.errors
    import app.gateway.protocol

    assert app.gateway.protocol.Register is agentplane.protocol.Register
    assert app.errors.CloseCode is agentplane.protocol.CloseCode
    assert app.errors.WsErrorCode is agentplane.protocol.WsErrorCode
