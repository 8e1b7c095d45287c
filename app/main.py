"""The application factory. The lifespan owns everything long-lived."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.agents.router import router as agents_router
from app.collab.router import router as sessions_router
from app.config import Settings, get_settings
from app.console.router import install_console
from app.db.session import create_engine, create_sessionmaker
from app.docs_ui import install_docs
from app.errors import ErrorBoundary, install_error_handlers
from app.gateway.endpoint import router as gateway_router
from app.http_metrics import install_http_metrics
from app.interop import Interop
from app.interop.a2a_registry import router as a2a_agents_router
from app.keys.router import router as keys_router
from app.keys.router import self_router as me_router
from app.limits import BodySizeLimit
from app.metrics import Metrics
from app.openapi import install_openapi
from app.probes import router as probes_router
from app.ratelimit import RateLimit
from app.replicas.router import router as replicas_router
from app.runtime import HELD_CONNECTIONS, Runtime
from app.security import KeyCache
from app.storable_params import StorableParams
from app.tasks.router import router as tasks_router
from app.usage.router import router as usage_router

_UNTRACED = frozenset({"/ws/agents", "/metrics", "/healthz", "/readyz"})


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope["type"] == "websocket" or scope.get("path") in _UNTRACED


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.database_url:
        raise RuntimeError("create_app needs settings.database_url (the CLI starts the embedded Postgres)")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.database_url is not None
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            held=HELD_CONNECTIONS,
            # Shorter than the replica timeout: by the time the others declare this replica dead, the
            # transactions it was frozen in have ended and their locks are free.
            idle_in_transaction=settings.replica_timeout / 2,
        )
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            sessionmaker=app.state.sessionmaker,
            metrics=metrics,
            key_cache=app.state.key_cache,
        )
        app.state.runtime = runtime
        await runtime.start()
        try:
            async with interop.running():  # stops the MCP session manager, if a request started it
                yield
        finally:
            await runtime.stop()
            await engine.dispose()

    app = FastAPI(
        title="Agentplane",
        version="0.1.0",
        summary="A control plane for fleets of AI agents.",
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_docs, not from a CDN
        redoc_url=None,
        # FastAPI's own OpenTelemetry: a span per HTTP request when tracing is on (app.tracing; it does
        # nothing while no tracer provider is installed). Not its dependency and serialization spans
        # (noise on the hot path), not its metrics (Prometheus has them), not its logs (they would export
        # request values, secrets included), and not the agents' WebSocket, whose span would last as long
        # as the connection.
        telemetry={"operation_spans": False, "metrics": False, "logs": False, "exclude": _untraced},
    )
    install_docs(app)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.key_cache = KeyCache()
    install_error_handlers(app)
    install_openapi(app)
    # Outermost last: the rate limit answers before a body is read; the boundary catches what handlers don't.
    app.add_middleware(ErrorBoundary)
    app.add_middleware(StorableParams)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if settings.rate_limit > 0:
        app.add_middleware(
            RateLimit,
            rate=settings.rate_limit,
            burst=settings.rate_limit_burst,
            key_cache=app.state.key_cache,
            admin_key=settings.admin_key.get_secret_value() if settings.admin_key else None,
        )

    # One level of routers, the busiest first: FastAPI matches each request against the routes in order,
    # and every nested router was another walk (routing was a tenth of a single submit's CPU).
    for router in (
        tasks_router,
        a2a_agents_router,  # POST /agents/a2a, before /agents/{agent_id} routes
        agents_router,
        sessions_router,
        keys_router,
        me_router,
        usage_router,
        replicas_router,
    ):
        app.include_router(router, prefix="/api/v1")
    app.include_router(probes_router)
    app.include_router(gateway_router)
    install_console(app)
    interop = Interop(app, settings)  # /mcp, the A2A card and /a2a/jsonrpc; their SDKs load on first use

    install_http_metrics(app, metrics.registry)
    return app
