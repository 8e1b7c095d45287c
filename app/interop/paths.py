"""The interop endpoints' paths, apart from the modules that serve them: app.interop routes them without
loading the MCP or A2A SDK, which load on the first request (docs/interop.md)."""

MCP = "/mcp"
A2A_JSONRPC = "/a2a/jsonrpc"
A2A_CARD = "/.well-known/agent-card.json"  # the A2A spec's well-known path, ours and the agents' we call
