"""Interop: the fleet behind an MCP server (/mcp) and as an A2A agent (/.well-known/agent-card.json,
/a2a/jsonrpc). docs/interop.md describes both; ``Interop`` is what app.main installs and runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Route, request_response
from starlette.types import ASGIApp

from app.config import Settings
from app.interop import a2a_server, auth
from app.interop.fleet import Fleet
from app.interop.mcp_server import PATH as MCP_PATH
from app.interop.mcp_server import build_mcp


class Interop:
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.fleet = Fleet(app.state)
        self.mcp_sessions, mcp_app = build_mcp(self.fleet, settings)
        a2a_app = request_response(a2a_server.dispatcher(self.fleet).handle_requests)

        def guard(inner: ASGIApp) -> auth.KeyGuard:
            return auth.KeyGuard(inner, settings=settings, key_cache=app.state.key_cache, state=app.state)

        app.router.routes.extend(
            [
                Route(MCP_PATH, guard(mcp_app), methods=["GET", "POST", "DELETE"], include_in_schema=False),
                Route(a2a_server.JSONRPC_PATH, guard(a2a_app), methods=["POST"], include_in_schema=False),
                Route(a2a_server.CARD_PATH, a2a_server.card_route(self.fleet), include_in_schema=False),
                Route(
                    f"{auth.METADATA_PATH}/{{resource:path}}", auth.resource_metadata, include_in_schema=False
                ),
            ]
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.mcp_sessions.run():
            yield
