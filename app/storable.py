"""What PostgreSQL and JSON accept: the rules live in agentplane.storable (the agent SDK checks its results
with them too, without the server installed); this module keeps the server's imports working."""

from agentplane.storable import (
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    StorableJson,
    StorableText,
    json_problem,
)

__all__ = ["INT_MAX", "INT_MIN", "MAX_DEPTH", "StorableJson", "StorableText", "json_problem"]
