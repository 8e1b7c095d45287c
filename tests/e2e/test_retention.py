"""Retention in a real server: the replica's schedule deletes finished tasks past the setting and keeps
open ones. (What is kept and deleted in detail, and the lock between replicas: tests/integration.)"""

from __future__ import annotations

import pytest

from tests.support.polling import eventually
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

SERVER_ENV = {
    "AGENTPLANE_RETENTION_TASKS": "1s",
    "AGENTPLANE_RETENTION_INTERVAL": "200ms",
}
NOBODY_CAN = {"type": "waits", "capabilities": ["no-agent-has-this"], "payload": {}}


def test_finished_tasks_are_deleted_and_open_ones_kept(server: ServerProcess) -> None:
    with server.client() as api:
        finished = api.post("/api/v1/tasks", json=NOBODY_CAN).json()["id"]
        still_open = api.post("/api/v1/tasks", json=NOBODY_CAN).json()["id"]
        assert api.post(f"/api/v1/tasks/{finished}/cancel").status_code == 200
        eventually(lambda: api.get(f"/api/v1/tasks/{finished}").status_code == 404, timeout=30)
        assert api.get(f"/api/v1/tasks/{still_open}").json()["status"] == "pending"
