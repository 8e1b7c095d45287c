"""Re-derive what this replica's sockets should be doing from the database.

The bus (LISTEN/NOTIFY) carries cancels, drains, deregistrations and replacements as they happen, but a
notification sent while the listener was reconnecting is gone, and a replica that was paused past the
replica timeout (a long GC pause, SIGSTOP, a partition from PostgreSQL) finds that the others have declared it
dead: its agents offline, their leases requeued. So after every listener reconnect, and on every replica
heartbeat, the state of the agents whose sockets are here and of the leases they hold is read back:

- an agent whose row is gone was deregistered: its socket is closed (4011);
- an agent registered again since (elsewhere, or later here) is owned by that registration: closed (4009);
- an agent the registry shows offline (this replica was declared dead): closed with 1013, so it reconnects
  and registers again at once instead of being served while the registry shows it offline;
- an agent the registry shows draining is told to drain;
- a lease that is no longer open (cancelled, lapsed, requeued) is cancelled at the agent and its slot freed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import raw
from app.dispatch.fleet import Fleet
from app.errors import CloseCode
from app.gateway.hub import Hub
from app.gateway.protocol import Cancel, DrainRequest
from app.signals import Signals
from app.statuses import AgentStatus, AssignmentStatus

logger = logging.getLogger(__name__)

_AGENTS = "SELECT id, status, replica_id, version FROM agents WHERE id = ANY($1::text[])"
_ENDED = "SELECT id, status, reason FROM assignments WHERE id = ANY($1::uuid[]) AND status <> ALL($2::text[])"
_OPEN = [AssignmentStatus.ASSIGNED.value, AssignmentStatus.RUNNING.value]
_ANSWERED = {AssignmentStatus.SUCCEEDED, AssignmentStatus.FAILED, AssignmentStatus.REJECTED}


@dataclass
class Reconciled:
    closed: int = 0
    drained: int = 0
    cancelled: int = 0

    def __bool__(self) -> bool:
        return bool(self.closed or self.drained or self.cancelled)


async def reconcile(
    engine: AsyncEngine, *, hub: Hub, fleet: Fleet, signals: Signals, replica_id: str
) -> Reconciled:
    connections = {connection.agent_id: connection for connection in hub if not connection.closed}
    held = {
        assignment_id: agent_id
        for agent_id in connections
        if (local := fleet.agents.get(agent_id)) is not None
        for assignment_id in local.open
    }
    done = Reconciled()
    if not connections:
        return done
    async with raw.connection(engine) as db:
        agents = {record["id"]: record for record in await db.fetch(_AGENTS, sorted(connections))}
        ended = await db.fetch(_ENDED, sorted(held), _OPEN) if held else []
    for agent_id, connection in connections.items():
        if hub.get(agent_id) is not connection or connection.closed:
            continue  # closed, or replaced by a new registration, while we read: not ours to judge
        row = agents.get(agent_id)
        if row is None:
            connection.close(CloseCode.DEREGISTERED, "the agent was deregistered")
        elif row["version"] != connection.version or row["replica_id"] != replica_id:
            connection.close(CloseCode.REPLACED, "the agent registered again elsewhere")
        elif row["status"] == AgentStatus.OFFLINE:
            connection.expect_back = True  # what it still runs is claimed when it registers again
            connection.close(CloseCode.TRY_AGAIN_LATER, "this replica was declared dead; register again")
        else:
            local = fleet.agents.get(agent_id)
            if row["status"] == AgentStatus.DRAINING and local is not None and local.status != "draining":
                fleet.agent_status(agent_id, "draining")
                connection.send(DrainRequest(reason="drained by an operator"))
                done.drained += 1
            continue
        fleet.agent_left(agent_id)
        done.closed += 1
    for record in ended:
        assignment_id: uuid.UUID = record["id"]
        agent_id = held[assignment_id]
        if hub.get(agent_id) is not connections[agent_id]:
            continue  # the agent registered again meanwhile: its leases were settled by that registration
        if record["status"] not in _ANSWERED:
            hub.send(agent_id, Cancel(assignment_id=assignment_id, reason=record["reason"] or "lease ended"))
            done.cancelled += 1
        fleet.assignment_ended(agent_id, assignment_id)
    if done.cancelled:
        signals.capacity_freed()
    if done:
        logger.warning(
            "reconciled with the database: %d sockets closed, %d drains, %d cancels",
            done.closed,
            done.drained,
            done.cancelled,
        )
    return done
