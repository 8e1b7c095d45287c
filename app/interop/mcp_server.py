"""The MCP server at /mcp: the official SDK's Streamable HTTP transport, one server per app instance.

Mounted as a plain route at exactly ``/mcp`` (the SDK's own Starlette app would sit under a mount, and a
mount answers ``/mcp`` with a redirect to ``/mcp/``). Imported on the first request to /mcp: app.interop
builds the server then and runs its session manager in a task until the app's lifespan ends.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager

from app.config import Settings
from app.interop.auth import transport_security
from app.interop.fleet import Fleet
from app.interop.mcp_tools import add_resources, add_tools
from app.interop.paths import MCP

INSTRUCTIONS = (
    "Agentplane routes tasks to a fleet of AI agents. list_agents shows who can do what; submit_task runs "
    "a task on a capable agent and returns its result; start_session runs several agents together "
    "(map_reduce, consensus, chain)."
)


def build_mcp(fleet: Fleet, settings: Settings) -> tuple[StreamableHTTPSessionManager, StreamableHTTPASGIApp]:
    """The session manager (to run while /mcp serves) and the ASGI app that serves /mcp."""
    server: MCPServer[Any] = MCPServer("agentplane", title="Agentplane", instructions=INSTRUCTIONS)
    add_tools(server, fleet)
    add_resources(server, fleet)
    # Builds (and keeps) the session manager; the Starlette app it returns is not used, see the docstring.
    server.streamable_http_app(
        streamable_http_path=MCP,
        transport_security=transport_security(settings),
        max_request_body_size=settings.max_request_bytes,
    )
    manager = server.session_manager
    return manager, StreamableHTTPASGIApp(manager)
