"""The HTTP request metrics name each request's route; answers for routes without parameters are memoized."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.config import load_settings
from app.http_metrics import _StaticRouteMemo
from app.main import create_app

SETTINGS = load_settings(database_url="postgresql+asyncpg://nobody@/nowhere")


def _requests_total(text: str) -> dict[tuple[str, str, str], float]:
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "http_requests":
            for sample in family.samples:
                if sample.name == "http_requests_total":
                    labels = sample.labels
                    counts[(labels["method"], labels["handler"], labels["status"])] = sample.value
    return counts


def _memo(app: Any) -> _StaticRouteMemo:
    layer = app.middleware_stack
    while not isinstance(layer, _StaticRouteMemo):
        layer = layer.app
    return layer


async def test_requests_are_counted_by_route_and_only_static_routes_are_memoized() -> None:
    app = create_app(SETTINGS)
    body = {"type": "echo", "input": {}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        for _ in range(3):  # no key: 401, after routing
            assert (await client.post("/api/v1/tasks", json=body)).status_code == 401
        for _ in range(2):  # a templated route (the method is not allowed: answered before any dependency)
            assert (await client.put(f"/api/v1/tasks/{uuid.uuid4()}")).status_code == 405
        for n in range(5):
            assert (await client.get(f"/no/such/path/{n}")).status_code == 404
        metrics = (await client.get("/metrics")).text
    counts = _requests_total(metrics)
    assert counts[("POST", "/api/v1/tasks", "401")] == 3
    assert counts[("PUT", "/api/v1/tasks/{task_id}", "405")] == 2
    assert not any(handler.startswith("/no/such") for _, handler, _ in counts)  # untemplated: not a label
    # Only the parameterless route is remembered: made-up paths cannot grow the memo.
    assert _memo(app)._static == {
        ("POST", "/api/v1/tasks"): ("/api/v1/tasks", True),
        ("GET", "/metrics"): ("/metrics", True),  # named, then excluded from the counts
    }
