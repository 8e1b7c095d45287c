"""The HTTP request metrics (prometheus-fastapi-instrumentator's defaults) on /metrics.

The instrumentator names each request's handler by matching the path against every route of the app, on
every request, after FastAPI has already done so to route it: on a single task submit that lookup was
about 4 % of the server's CPU. A path that names a route without parameters (`/api/v1/tasks`) always
resolves to itself, so those answers are remembered; templated and unknown paths are looked up as before
(remembering them would let any client grow the memo with made-up paths).
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.middleware import Middleware
from starlette.requests import Request


class _StaticRouteMemo(PrometheusInstrumentatorMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bounded: static routes × the HTTP methods the parser accepts.
        self._static: dict[tuple[str, str], tuple[str, bool]] = {}

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        key = (request.scope["method"], request.scope["path"])
        found = self._static.get(key)
        if found is None:
            found = super()._get_handler(request)
            if found == (key[1], True):  # a route without parameters: the same answer every time
                self._static[key] = found
        return found


def install_http_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    Instrumentator(
        registry=registry,
        excluded_handlers=["/metrics", "/healthz", "/readyz"],
        should_group_status_codes=False,
    ).instrument(app).expose(app, include_in_schema=False)
    # instrument() adds its middleware class; the app builds its middleware stack on its first request.
    app.user_middleware[:] = [
        Middleware(_StaticRouteMemo, *entry.args, **entry.kwargs)
        if entry.cls is cast(Any, PrometheusInstrumentatorMiddleware)
        else entry
        for entry in app.user_middleware
    ]
