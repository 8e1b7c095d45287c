"""The sockets this replica holds, by agent id. Knows nothing of tasks or the database."""

from __future__ import annotations

from collections.abc import Iterator

from app.gateway.connection import Connection
from app.gateway.protocol import Frame


class Hub:
    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}

    def attach(self, connection: Connection) -> Connection | None:
        """Make ``connection`` the agent's socket here; returns the one it replaces, if any."""
        previous = self._connections.get(connection.agent_id)
        self._connections[connection.agent_id] = connection
        return previous

    def detach(self, connection: Connection) -> bool:
        """Forget ``connection`` if it is still the agent's current one (a replaced socket is not)."""
        if self._connections.get(connection.agent_id) is connection:
            del self._connections[connection.agent_id]
            return True
        return False

    def get(self, agent_id: str) -> Connection | None:
        return self._connections.get(agent_id)

    def is_open(self, agent_id: str) -> bool:
        connection = self._connections.get(agent_id)
        return connection is not None and not connection.closed

    def send(self, agent_id: str, frame: Frame) -> bool:
        connection = self._connections.get(agent_id)
        return connection.send(frame) if connection is not None else False

    def close(self, agent_id: str, code: int, reason: str) -> bool:
        connection = self._connections.get(agent_id)
        if connection is None:
            return False
        connection.close(code, reason)
        return True

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._connections.values()))

    def __len__(self) -> int:
        return len(self._connections)
