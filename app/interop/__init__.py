"""Interop: the fleet behind an MCP server (/mcp) and as an A2A agent (/.well-known/agent-card.json,
/a2a/jsonrpc). docs/interop.md describes both; ``Interop`` is what app.main installs and runs.

The MCP and A2A SDKs load on the first request to their endpoints, not with the app: most deployments never
use them, and an idle server should not carry them (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.interop import auth, paths
from app.interop.fleet import Fleet

if TYPE_CHECKING:
    from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

logger = logging.getLogger(__name__)


class Interop:
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.fleet = Fleet(app.state)
        self.settings = settings
        # /mcp: the server and its session manager's task, started by the first request (_start_mcp).
        self._mcp_app: ASGIApp | None = None
        self._mcp_task: asyncio.Task[None] | None = None
        self._mcp_lock = asyncio.Lock()
        self._mcp_ready = asyncio.Event()
        self._mcp_stop = asyncio.Event()
        self._a2a: JsonRpcDispatcher | None = None
        self._card: Callable[[Request], Awaitable[Response]] | None = None

        def guard(inner: ASGIApp) -> auth.KeyGuard:
            return auth.KeyGuard(inner, settings=settings, key_cache=app.state.key_cache, state=app.state)

        app.router.routes.extend(
            [
                Route(
                    paths.MCP,
                    guard(self._serve_mcp),
                    methods=["GET", "POST", "DELETE"],
                    include_in_schema=False,
                ),
                Route(
                    paths.A2A_JSONRPC,
                    guard(request_response(self._serve_a2a)),
                    methods=["POST"],
                    include_in_schema=False,
                ),
                Route(paths.A2A_CARD, self._serve_card, include_in_schema=False),
                Route(
                    f"{auth.METADATA_PATH}/{{resource:path}}", auth.resource_metadata, include_in_schema=False
                ),
            ]
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The lifespan's part: at its end, the MCP session manager stops (if a request started it)."""
        try:
            yield
        finally:
            task = self._mcp_task
            if task is not None:
                self._mcp_stop.set()
                await task
            self._mcp_lock = asyncio.Lock()  # a later lifespan may run on another event loop

    # ---------------------------------------------------------------- /mcp

    async def _serve_mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._mcp_app or await self._start_mcp()
        await app(scope, receive, send)

    async def _start_mcp(self) -> ASGIApp:
        async with self._mcp_lock:  # concurrent first requests build and start one server
            if self._mcp_task is None:
                from app.interop.mcp_server import build_mcp  # the MCP SDK loads here

                manager, app = build_mcp(self.fleet, self.settings)
                self._mcp_ready, self._mcp_stop = asyncio.Event(), asyncio.Event()
                # Its own task: the session manager's task group outlives the request that starts it. A fresh
                # context, so that it does not carry that request's trace span.
                self._mcp_task = asyncio.create_task(
                    self._run_mcp(manager, app, self._mcp_ready, self._mcp_stop),
                    name="mcp-session-manager",
                    context=contextvars.Context(),
                )
            await self._mcp_ready.wait()
        if self._mcp_app is None:
            raise RuntimeError("the MCP session manager did not start")  # _run_mcp logged why
        return self._mcp_app

    async def _run_mcp(
        self, manager: StreamableHTTPSessionManager, app: ASGIApp, ready: asyncio.Event, stop: asyncio.Event
    ) -> None:
        try:
            async with manager.run():
                self._mcp_app = app
                ready.set()
                await stop.wait()
        except Exception:  # the next request starts a new one
            logger.exception("the MCP session manager failed")
        finally:
            self._mcp_app = None
            self._mcp_task = None
            ready.set()

    # ---------------------------------------------------------------- A2A

    async def _serve_a2a(self, request: Request) -> Response:
        if self._a2a is None:
            from app.interop import a2a_server  # the A2A SDK loads here

            self._a2a = a2a_server.dispatcher(self.fleet)
        return await self._a2a.handle_requests(request)

    async def _serve_card(self, request: Request) -> Response:
        if self._card is None:
            from app.interop import a2a_server

            self._card = a2a_server.card_route(self.fleet)
        return await self._card(request)
