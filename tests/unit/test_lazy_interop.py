"""The MCP and A2A SDKs load on first use, not with the app: an idle server does not carry them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import load_settings
from app.interop import Interop, mcp_server, paths
from app.security import KeyCache

DATABASE_URL = "postgresql+asyncpg://nobody@/nowhere"
ADMIN_KEY = "ap_test_admin_key_for_the_lazy_interop_test"
SDKS = ("mcp", "mcp_types", "a2a")


def test_importing_and_creating_the_app_loads_no_interop_sdk() -> None:
    code = (
        "import json, sys\n"
        "from app.config import load_settings\n"
        "from app.main import create_app\n"
        f"create_app(load_settings(database_url={DATABASE_URL!r}))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert {"app.main", "app.runtime", "app.interop", "app.interop.a2a_registry"} <= set(loaded)
    sdk = [name for name in loaded if name.split(".")[0] in SDKS or name.startswith("google.protobuf")]
    assert sdk == []


def test_the_paths_are_the_sdks() -> None:
    from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH

    assert paths.A2A_CARD == AGENT_CARD_WELL_KNOWN_PATH


def _initialize(request_id: int) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "lazy-interop-test", "version": "1"},
        },
    }


async def test_concurrent_first_requests_start_one_mcp_server_which_the_lifespan_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builds = []
    build_mcp = mcp_server.build_mcp

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        return build_mcp(*args, **kwargs)

    monkeypatch.setattr(mcp_server, "build_mcp", counting_build)
    app = FastAPI()
    app.state.key_cache = KeyCache()
    interop = Interop(app, load_settings(database_url=DATABASE_URL, admin_key=ADMIN_KEY))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Accept": "application/json, text/event-stream"}

    def managers() -> list[asyncio.Task[Any]]:
        return [task for task in asyncio.all_tasks() if task.get_name() == "mcp-session-manager"]

    async with (
        interop.running(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        answers = await asyncio.gather(
            *(client.post(paths.MCP, json=_initialize(n), headers=headers) for n in range(5))
        )
        assert [answer.status_code for answer in answers] == [200] * 5, answers[0].text
        assert all('"serverInfo"' in answer.text for answer in answers)
        assert builds == [1]
        assert len(managers()) == 1
        # The guard still stands in front: a foreign Host, then a missing key, are refused.
        foreign = await client.post(paths.MCP, json=_initialize(9), headers={**headers, "Host": "evil"})
        assert foreign.is_error
        assert (await client.post(paths.MCP, json=_initialize(9))).status_code == 401
    assert managers() == []
