"""What the gateway tells the layer above it (the dispatcher's view of the local fleet)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from app.agents.service import RegisteredAgent
from app.tasks.lifecycle import Finished


class FleetListener(Protocol):
    def agent_joined(self, agent: RegisteredAgent) -> None: ...

    def agent_left(self, agent_id: str) -> None: ...

    def agent_status(self, agent_id: str, status: str) -> None: ...

    def assignments_ended(self, finished: Sequence[Finished]) -> None: ...

    def assignment_released(self, agent_id: str, assignment_id: uuid.UUID) -> None: ...
