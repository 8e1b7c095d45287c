"""The app factory can run more than once in one process (tests, workers): no global collector clashes."""

from __future__ import annotations

import httpx

from app.config import load_settings
from app.main import create_app

SETTINGS = load_settings(database_url="postgresql+asyncpg://nobody@/nowhere")


async def test_the_app_can_be_built_twice_in_one_process() -> None:
    first, second = create_app(SETTINGS), create_app(SETTINGS)
    assert first.state.metrics.registry is not second.state.metrics.registry
    for app in (first, second):
        # No lifespan here: these two routes need no database.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            metrics = (await client.get("/metrics")).text
            assert "mcp_agents_registered_total" in metrics
            assert "http_requests_total" in metrics


def test_every_api_operation_requires_a_key() -> None:
    schema = create_app(SETTINGS).openapi()
    operations = [
        (path, method, operation)
        for path, methods in schema["paths"].items()
        if path.startswith("/api/v1")
        for method, operation in methods.items()
    ]
    assert len(operations) > 20
    assert [
        (path, method) for path, method, op in operations if op.get("security") != [{"HTTPBearer": []}]
    ] == []
    open_paths = {path for path in schema["paths"] if not path.startswith("/api/v1")}
    assert open_paths == {"/healthz", "/readyz"}
