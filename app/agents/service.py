"""The agent registry: registration, status, the capability index, health history. Postgres holds it all."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import raw
from app.db.models import Agent, Assignment
from app.errors import AgentNotFound, AgentRejected, CloseCode, Conflict
from app.gateway.protocol import Register
from app.tasks import lifecycle, recovery
from app.tasks.service import notify
from app.tasks.work import Quarantine

HEALTH_HISTORY = 100
UNHEALTHY_AFTER = 3
OPEN = ("assigned", "running")


@dataclass(frozen=True, slots=True)
class RegisteredAgent:
    id: str
    name: str
    model: str
    capabilities: frozenset[str]
    max_concurrency: int
    success_rate: float
    active: int  # open assignments: those it held and claimed on reconnecting
    requeued: lifecycle.Outcome
    version: int  # this registration's version of the agents row: a later one supersedes it
    held: tuple[uuid.UUID, ...] = ()  # leases it said it holds, moved to this connection
    released: tuple[uuid.UUID, ...] = ()  # ones it said it holds but lost meanwhile: the agent must stop them
    status: str = "active"  # quarantined when it reconnects within its quarantine
    task_types: frozenset[str] | None = None  # None: any type
    versions: Mapping[str, str] = field(default_factory=dict)  # capability -> its declared version


# Registration is two statements besides the transaction's own: one read (the current owner and replica, and
# whether the id still holds open work) and one write (the agent and its capability index). A reconnect storm
# of thousands of agents runs these thousands of times a minute, so they are fixed asyncpg statements.
_EXISTING = """SELECT replica_id, status, owner_key_id, transport,
    EXISTS (SELECT 1 FROM assignments WHERE agent_id = $1 AND status IN ('assigned', 'running')) AS holds_work
FROM agents WHERE id = $1"""
# A reconnect refreshes the row, bumps its version and keeps its first owner. One statement writes many agents
# (the registrar coalesces registrations; a lone one is a batch of one), ids unique within it (ON CONFLICT may
# touch a row once). The capability index is replaced in the same statement; one statement cannot delete and
# re-insert the same key (both see one snapshot), so names that stay are updated in place and only names that
# went are deleted.
UPSERT_AGENTS = """WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::uuid[], $7::text[])
        AS i(id, name, model, capabilities, max_concurrency, owner_key_id, task_types)
), agent AS (
    INSERT INTO agents (id, name, model, capabilities, max_concurrency, replica_id, owner_key_id, status,
        connected_at, last_seen_at, health_failures, transport, task_types)
    SELECT id, name, model, capabilities::jsonb, max_concurrency, $8, owner_key_id, 'active', now(), now(), 0,
        $9, task_types::jsonb
    FROM input ORDER BY id
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, model = excluded.model,
        capabilities = excluded.capabilities, max_concurrency = excluded.max_concurrency,
        replica_id = excluded.replica_id, connected_at = excluded.connected_at,
        last_seen_at = excluded.last_seen_at, health_failures = excluded.health_failures,
        version = agents.version + 1, owner_key_id = coalesce(agents.owner_key_id, excluded.owner_key_id),
        task_types = excluded.task_types,
        -- Reconnecting does not end a quarantine: only its cool-down, a success or an operator does. Nor a
        -- drain: only the agent's goodbye does (a fast reconnect, a lost socket, a replica declared dead).
        status = CASE WHEN agents.quarantined_until > now() THEN 'quarantined'
            WHEN agents.status = 'draining' OR agents.drain_requested THEN 'draining' ELSE excluded.status END
    RETURNING id, name, model, max_concurrency, tasks_completed, tasks_failed, version, status
), caps AS (
    SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::text[])
        AS c(agent_id, name, type, version)
), gone AS (
    DELETE FROM agent_capabilities old WHERE old.agent_id = ANY($1::text[])
        AND NOT EXISTS (SELECT 1 FROM caps WHERE caps.agent_id = old.agent_id AND caps.name = old.name)
), kept AS (
    INSERT INTO agent_capabilities (agent_id, name, type, version)
    SELECT agent_id, name, type, version FROM caps
    ON CONFLICT (agent_id, name) DO UPDATE SET type = excluded.type, version = excluded.version
)
SELECT * FROM agent"""


async def upsert_agents(
    db: raw.Driver,
    agents: Sequence[tuple[str, Register, uuid.UUID | None]],
    *,
    replica_id: str,
    transport: str,
    default_concurrency: int,
) -> dict[str, Any]:
    """Write (agent id, its register frame, the key registering it) for each agent, ids unique: the stored
    rows by id (name, model, max_concurrency, tasks_completed, tasks_failed, version, status)."""
    columns: list[list[Any]] = [[] for _ in range(7)]
    caps: list[list[Any]] = [[] for _ in range(4)]
    for agent_id, frame, key_id in agents:
        values = (
            agent_id,
            frame.name or agent_id,
            frame.model,
            raw.json_text([cap.model_dump() for cap in frame.capabilities]),
            frame.max_concurrency or default_concurrency,
            key_id,
            None if frame.task_types is None else raw.json_text(sorted(set(frame.task_types))),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        for cap in frame.capabilities:
            for column, value in zip(caps, (agent_id, cap.name, cap.type, cap.version), strict=True):
                column.append(value)
    records = await db.fetch(UPSERT_AGENTS, *columns, replica_id, transport, *caps)
    return {record["id"]: record for record in records}


# Of the rest it named, those whose answer is recorded need no cancel: the agent's resent result is acked.
_ANSWERED = """SELECT id FROM assignments WHERE id = ANY($1::uuid[]) AND status IN ('succeeded', 'failed')"""


def new_agent_id() -> str:
    return f"agent-{uuid.uuid4().hex[:12]}"


async def register(
    session: AsyncSession,
    frame: Register,
    *,
    replica_id: str,
    allowed_models: Sequence[str],
    default_concurrency: int,
    key_id: uuid.UUID | None,
    admin: bool,
    undelivered: Collection[uuid.UUID] = (),
    transport: str = "websocket",
    quarantine: Quarantine | None = None,
) -> RegisteredAgent:
    """Upsert the agent for this connection. An agent id belongs to the key that first registered it: another
    agent key cannot take it over (and so act for it); an admin key can. ``undelivered``: assignments of the
    previous connection whose `assign` never reached its socket; requeued, they cost their task no attempt.
    An id keeps its transport: a socket cannot take over an A2A agent's id, whatever its key."""
    if allowed_models and frame.model not in allowed_models:
        raise AgentRejected(
            CloseCode.MODEL_NOT_ALLOWED,
            f"model {frame.model!r} is not allowed here; allowed: {', '.join(allowed_models)}",
        )
    agent_id = frame.agent_id or new_agent_id()
    await session.execute(select(1))  # begins the session's transaction, which the statements below join
    db = await raw.driver_of(session)
    existing = await db.fetchrow(_EXISTING, agent_id)
    if existing is not None and existing["owner_key_id"] not in (None, key_id) and not admin:
        raise AgentRejected(CloseCode.UNAUTHORIZED, f"agent id {agent_id!r} is registered to another API key")
    if existing is not None and existing["transport"] != transport:
        raise AgentRejected(
            CloseCode.UNAUTHORIZED, f"agent id {agent_id!r} is an agent reached over {existing['transport']}"
        )
    previous_replica = (
        existing["replica_id"] if existing is not None and existing["status"] != "offline" else None
    )
    # What an old connection held and the agent no longer does goes back to the queue now, not at lease
    # expiry; what it still holds moves to this connection (hand-over). (Requeue and claim before touching
    # the agent row: tasks, assignments, then agents is the lock order.)
    holding = set(frame.holding) - set(undelivered)
    requeued = lifecycle.Outcome()
    held: tuple[uuid.UUID, ...] = ()
    released: tuple[uuid.UUID, ...] = ()
    if existing is not None and existing["holds_work"]:
        requeued, held = await recovery.hand_over(
            session,
            agent_id,
            holding,
            replica_id=replica_id,
            undelivered=undelivered,
            quarantine=quarantine,  # what it no longer holds, it lost
        )
    if holding - set(held):
        lost = holding - set(held)
        answered = {record["id"] for record in await db.fetch(_ANSWERED, sorted(lost))}
        released = tuple(sorted(lost - answered))
    capabilities = frame.capabilities
    written = await upsert_agents(
        db,
        [(agent_id, frame, key_id)],
        replica_id=replica_id,
        transport=transport,
        default_concurrency=default_concurrency,
    )
    agent = written[agent_id]
    if previous_replica is not None and previous_replica != replica_id:
        await notify(session, {"k": "replace", "agent": agent_id, "replica": replica_id})
    done = agent["tasks_completed"] + agent["tasks_failed"]
    return RegisteredAgent(
        id=agent_id,
        name=agent["name"],
        model=agent["model"],
        capabilities=frozenset(cap.name for cap in frame.capabilities),
        max_concurrency=agent["max_concurrency"],
        success_rate=agent["tasks_completed"] / done if done else 1.0,
        active=len(held),
        requeued=requeued,
        version=agent["version"],
        held=held,
        released=released,
        status=agent["status"],
        task_types=None if frame.task_types is None else frozenset(frame.task_types),
        versions={cap.name: cap.version for cap in capabilities},
    )


async def disconnect(
    session: AsyncSession,
    agent_id: str,
    *,
    replica_id: str,
    version: int,
    undelivered: Collection[uuid.UUID] = (),
    handover: bool = False,
    quarantine: Quarantine | None = None,
    goodbye: bool = False,
) -> lifecycle.Outcome:
    """The socket of registration ``version`` on ``replica_id`` closed: the agent is offline at once. A no-op
    when a newer registration (on any replica) owns the agent. ``undelivered``: assignments whose `assign`
    never reached the socket; they go back to the queue now and cost their task no attempt. The rest goes
    back now too, unless ``handover``: then it waits for the agent to reconnect and claim it, and the reaper
    requeues what nobody claimed within the grace period (app.tasks.recovery.requeue_abandoned).
    ``goodbye``: the agent closed its socket itself (1000), which ends a drain; any other close keeps it."""
    row = (await session.execute(select(Agent.version, Agent.replica_id).where(Agent.id == agent_id))).first()
    current, owner = (row[0], row[1]) if row is not None else (None, None)
    if current != version:
        if current is None or owner == replica_id:
            return lifecycle.Outcome()  # gone, or registered here again: that registration settled its work
        # A newer registration elsewhere owns the agent and claimed what it still holds; work this replica
        # leased to the abandoned socket after that (before the `replace` reached it) was never run.
        return await recovery.requeue_open_assignments(
            session,
            agent_ids=[agent_id],
            replica_id=replica_id,
            reason="assigned to a socket the agent had already left",
            undelivered=True,
            registration=(agent_id, current),
        )
    undelivered = set(undelivered)
    if handover and not undelivered:
        outcome = lifecycle.Outcome()
    else:
        outcome = await recovery.requeue_open_assignments(
            session,
            agent_ids=[agent_id],
            replica_id=replica_id,
            assignment_ids=sorted(undelivered) if handover else None,
            reason="agent disconnected",
            undelivered=undelivered,
            registration=(agent_id, version),
            quarantine=quarantine,
        )
    ended = {"drain_requested": False} if goodbye else {}
    await session.execute(
        update(Agent)
        .where(Agent.id == agent_id, Agent.version == version)
        .values(status="offline", last_seen_at=func.now(), **ended)
    )
    return outcome


async def set_status(session: AsyncSession, agent_id: str, status: str) -> None:
    await session.execute(
        update(Agent).where(Agent.id == agent_id).values(status=status, last_seen_at=func.now())
    )


async def drain(session: AsyncSession, agent_id: str) -> Agent:
    agent = await session.get(Agent, agent_id, with_for_update=True)
    if agent is None:
        raise AgentNotFound(f"no agent with id {agent_id}")
    if agent.status == "offline":
        raise Conflict(f"agent {agent_id} is offline; only a connected agent can be drained")
    agent.status = "draining"
    agent.drain_requested = True  # kept through lost sockets and replica deaths, until the agent says goodbye
    await notify(session, {"k": "drain", "agent": agent_id})
    await session.commit()
    await session.refresh(agent)
    return agent


async def deregister(session: AsyncSession, agent_id: str) -> None:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise AgentNotFound(f"no agent with id {agent_id}")
    await recovery.requeue_open_assignments(session, agent_ids=[agent_id], reason="agent deregistered")
    await notify(session, {"k": "deregister", "agent": agent_id, "model": agent.model})
    await session.delete(agent)
    await session.commit()


async def mark_replica_agents_offline(
    session: AsyncSession, replica_id: str, *, reason: str, handover: bool = False
) -> lifecycle.Outcome:
    """A replica died (or restarted): its agents are offline, and its leases go back to the queue, at once or
    (``handover``) once the grace period has passed without their agents reconnecting to claim them. Leases
    already claimed by a reconnected agent are on its new replica and not touched."""
    outcome = (
        lifecycle.Outcome()
        if handover
        else await recovery.requeue_open_assignments(session, replica_id=replica_id, reason=reason)
    )
    await session.execute(
        update(Agent)
        .where(Agent.replica_id == replica_id, Agent.status != "offline")
        .values(status="offline", last_seen_at=func.now())
    )
    return outcome


async def record_health(
    session: AsyncSession, checks: Sequence[tuple[str, bool, float | None, str | None]], *, prune: bool
) -> tuple[list[str], list[str]]:
    """Store one round of checks in bulk; returns the agents now unhealthy and those recovered.

    The caller requeues the unhealthy agents' work in a transaction of its own (lock order).
    """
    if not checks:
        return [], []
    ordered = sorted(checks)  # id order, like every other statement that locks agents
    # Set-based, with arrays as parameters: with ten thousand agents, per-row parameters (the ORM's bulk
    # insert, an expanding IN) and per-row results held the event loop for seconds each round and made
    # pings look late.
    await session.execute(
        text(
            "INSERT INTO agent_health_checks (agent_id, ok, duration_ms, error)"
            " SELECT agent_id, ok, duration_ms, error FROM unnest(CAST(:agents AS text[]),"
            " CAST(:oks AS boolean[]), CAST(:ms AS double precision[]), CAST(:errors AS text[]))"
            " WITH ORDINALITY AS v(agent_id, ok, duration_ms, error, ord) ORDER BY ord"
        ),
        {
            "agents": [agent_id for agent_id, *_ in ordered],
            "oks": [ok for _, ok, _, _ in ordered],
            "ms": [ms for _, _, ms, _ in ordered],
            "errors": [error for *_, error in ordered],
        },
    )
    if prune:  # amortised: the history is trimmed back to 100 every few rounds
        await session.execute(
            text(
                "DELETE FROM agent_health_checks h USING ("
                " SELECT id, row_number() OVER (PARTITION BY agent_id ORDER BY id DESC) AS rn"
                " FROM agent_health_checks WHERE agent_id = ANY(:ids)) old"
                " WHERE h.id = old.id AND old.rn > :keep"
            ),
            {"ids": [agent_id for agent_id, *_ in ordered], "keep": HEALTH_HISTORY},
        )
    passed = [agent_id for agent_id, ok, *_ in ordered if ok]
    failed = [agent_id for agent_id, ok, *_ in ordered if not ok]
    # Every agent row locked at once in id order, the order the frame batches lock them in. NO KEY UPDATE:
    # these updates change no key, so inserts that refer to agents (their key-share locks) need not wait.
    await session.execute(
        text(
            "SELECT count(*) FROM (SELECT 1 FROM agents WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE)"
            " AS locked"
        ),
        {"ids": passed + failed},
    )
    recovered = (
        list(
            await session.scalars(
                text(
                    "WITH prev AS (SELECT id, status FROM agents WHERE id = ANY(:ids)"
                    " ORDER BY id FOR NO KEY UPDATE),"
                    " changed AS (UPDATE agents a SET health_failures = 0, last_seen_at = now(),"
                    " last_health_check_at = now(),"
                    " status = CASE WHEN prev.status = 'unhealthy' THEN 'active' ELSE prev.status END"
                    " FROM prev WHERE a.id = prev.id"
                    " RETURNING CASE WHEN prev.status = 'unhealthy' THEN a.id END AS id)"
                    " SELECT id FROM changed WHERE id IS NOT NULL"
                ),
                {"ids": passed},
            )
        )
        if passed
        else []
    )
    became_unhealthy = (
        list(
            await session.scalars(
                text(
                    "WITH prev AS (SELECT id, status, health_failures FROM agents WHERE id = ANY(:ids)"
                    " ORDER BY id FOR NO KEY UPDATE),"
                    " changed AS (UPDATE agents a SET health_failures = prev.health_failures + 1,"
                    " last_health_check_at = now(),"
                    " status = CASE WHEN prev.health_failures + 1 >= :limit"
                    " AND prev.status IN ('active', 'draining') THEN 'unhealthy' ELSE prev.status END"
                    " FROM prev WHERE a.id = prev.id"
                    " RETURNING CASE WHEN a.status = 'unhealthy' AND prev.status <> 'unhealthy' THEN a.id END"
                    " AS id)"
                    " SELECT id FROM changed WHERE id IS NOT NULL"
                ),
                {"ids": failed, "limit": UNHEALTHY_AFTER},
            )
        )
        if failed
        else []
    )
    return became_unhealthy, recovered


async def open_assignment_counts(session: AsyncSession, agent_ids: Sequence[str]) -> dict[str, int]:
    rows = await session.execute(
        select(Assignment.agent_id, func.count())
        .where(Assignment.agent_id.in_(list(agent_ids)), Assignment.status.in_(OPEN))
        .group_by(Assignment.agent_id)
    )
    return {agent_id: count for agent_id, count in rows.tuples()}


_END_QUARANTINES = """UPDATE agents SET status = 'active', quarantined_until = NULL
WHERE replica_id = $1 AND status = 'quarantined' AND quarantined_until <= now() RETURNING id"""


async def end_quarantines(session: AsyncSession, replica_id: str) -> list[str]:
    """Quarantined agents of this replica whose cool-down has passed go back to active. Their count of lapses
    stays: one more lapse before a success quarantines them again."""
    await session.execute(select(1))  # begins the session's transaction, which the statement below joins
    db = await raw.driver_of(session)
    return [record["id"] for record in await db.fetch(_END_QUARANTINES, replica_id)]


async def release(session: AsyncSession, agent_id: str) -> Agent:
    """An operator ends an agent's quarantine: active again, its count of lapses reset."""
    agent = await session.get(Agent, agent_id, with_for_update=True)
    if agent is None:
        raise AgentNotFound(f"no agent with id {agent_id}")
    if agent.status != "quarantined":
        raise Conflict(f"agent {agent_id} is {agent.status}; only a quarantined agent can be released")
    agent.status = "active"
    agent.quarantined_until = None
    agent.consecutive_lapses = 0
    await notify(session, {"k": "release", "agent": agent_id})
    await session.commit()
    return agent
