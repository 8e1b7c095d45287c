"""The dispatcher's view of the agents whose sockets this replica holds: capacity, status, open leases."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from app.agents.service import RegisteredAgent
from app.routing.strategies import Candidate
from app.tasks.lifecycle import Finished

REFUSAL_COOLDOWN = 5.0  # seconds before an agent that refused a task is offered it again


class ClaimScope(NamedTuple):
    capabilities: list[str]
    models: list[str]
    agent_ids: list[str]
    task_types: list[str] | None  # None: some agent here takes any type


@dataclass(slots=True)  # one per connected agent: no instance dict
class LocalAgent:
    id: str
    model: str
    capabilities: frozenset[str]
    max_concurrency: int
    status: str = "active"
    task_types: frozenset[str] | None = None  # None: any type
    versions: Mapping[str, str] = field(default_factory=dict)  # the registration's own (never changed)
    completed: int = 0
    failed: int = 0
    prior_success_rate: float = 1.0
    open: set[uuid.UUID] = field(default_factory=set)
    _candidate: Candidate | None = field(default=None, repr=False, compare=False)

    @property
    def success_rate(self) -> float:
        done = self.completed + self.failed
        return self.completed / done if done else self.prior_success_rate

    def candidate(self) -> Candidate:
        """Rebuilt only when what routing looks at has changed: every dispatch round asks for every agent's,
        and a fleet of thousands joining would otherwise rebuild them all on each join."""
        active, rate, cached = len(self.open), self.success_rate, self._candidate
        if (
            cached is None
            or cached.active != active
            or cached.success_rate != rate
            or cached.status != self.status
        ):
            cached = self._candidate = Candidate(
                agent_id=self.id,
                model=self.model,
                capabilities=self.capabilities,
                max_concurrency=self.max_concurrency,
                active=active,
                success_rate=rate,
                status=self.status,
                task_types=self.task_types,
                versions=self.versions,
            )
        return cached


class Fleet:
    """Implements the gateway's FleetListener. Open leases are tracked by assignment id, so a repeated
    end-of-assignment signal (the answer's arrival, then its commit) never frees capacity twice."""

    def __init__(self) -> None:
        self.agents: dict[str, LocalAgent] = {}
        # Kept up to date on every change, so a dispatcher round costs O(1) in the fleet's size, not O(N): a
        # reconnect storm of 10,000 agents spent a fifth of the server's CPU recounting them every round.
        self._spare = 0  # free slots across the active agents
        self._full = 0  # active agents with no free slot
        self._capabilities: Counter[str] = Counter()  # over the active agents
        self._models: Counter[str] = Counter()
        self._types: Counter[str] = Counter()
        self._any_type = 0  # active agents that handle any type
        self._active: dict[str, None] = {}  # the active agents' ids, in join order
        self._scope: ClaimScope | None = None  # claim_scope(), until it changes
        self._changing_open = False
        self.changes = 0  # bumped by every join, leave, status change, lease and freed slot
        # Who refused which task and when, so the dispatcher offers it elsewhere (bounded; a hint only).
        self.rejections: dict[uuid.UUID, dict[str, float]] = {}

    def agent_joined(self, agent: RegisteredAgent) -> None:
        self.agent_left(agent.id)  # a reconnect to this replica replaces the old entry
        local = self.agents[agent.id] = LocalAgent(
            id=agent.id,
            model=agent.model,
            capabilities=agent.capabilities,
            max_concurrency=agent.max_concurrency,
            status=agent.status,
            task_types=agent.task_types,
            versions=agent.versions,  # read-only, like the frozen registration it comes from: not copied
            prior_success_rate=agent.success_rate,
            open=set(agent.held),  # hand-over: the leases it kept count against its capacity here
        )
        self._count(local, +1)

    def agent_left(self, agent_id: str) -> None:
        agent = self.agents.pop(agent_id, None)
        if agent is not None:
            self._count(agent, -1)

    def agent_status(self, agent_id: str, status: str) -> None:
        agent = self.agents.get(agent_id)
        if agent is not None:
            self._count(agent, -1)
            agent.status = status
            self._count(agent, +1)

    def _count(self, agent: LocalAgent, sign: int) -> None:
        """Add (+1) or remove (-1) the agent's share of the fleet-wide counts; changes to its status or its
        open set happen between a -1 and a +1."""
        self.changes += 1
        if agent.status != "active":
            return
        if not self._changing_open:
            self._scope_count(agent, sign)
        free = agent.max_concurrency - len(agent.open)
        self._spare += sign * max(0, free)
        self._full += sign * (free <= 0)

    def _scope_count(self, agent: LocalAgent, sign: int) -> None:
        self._capabilities.update({name: sign for name in agent.capabilities})
        self._models[agent.model] += sign
        if agent.task_types is None:
            self._any_type += sign
        else:
            self._types.update({name: sign for name in agent.task_types})
        if sign > 0:
            self._active[agent.id] = None
        else:
            self._active.pop(agent.id, None)
        self._scope = None

    def _set_open(self, agent: LocalAgent, change: Callable[[set[uuid.UUID]], None]) -> None:
        self._changing_open = True  # the agent stays in the claim's scope: only its free slots change
        try:
            self._count(agent, -1)
            change(agent.open)
            self._count(agent, +1)
        finally:
            self._changing_open = False

    def assignments_ended(self, finished: Sequence[Finished]) -> None:
        for item in finished:
            if item.rejected:
                if len(self.rejections) > 10_000:
                    self.rejections.clear()
                self.rejections.setdefault(item.task_id, {})[item.agent_id] = time.monotonic()
            elif item.status != "pending":
                self.rejections.pop(item.task_id, None)
            agent = self.agents.get(item.agent_id)
            if agent is None or item.assignment_id is None:
                continue
            self.assignment_ended(item.agent_id, item.assignment_id)
            # An assignment ends once in the record (Finished is emitted by the transaction that closed it),
            # so these counts do not depend on whether the slot was released earlier.
            if item.status == "succeeded":
                agent.completed += 1
            elif item.status == "failed" or (item.retried and item.executed) or item.lapsed:
                agent.failed += 1

    def assignment_released(self, agent_id: str, assignment_id: uuid.UUID) -> None:
        """The agent answered (result or refusal): its slot is free before the answer is committed."""
        self.assignment_ended(agent_id, assignment_id)

    def assignment_ended(self, agent_id: str, assignment_id: uuid.UUID) -> None:
        # Called twice per result (at the answer, then after its commit): the second is a no-op, and must not
        # count as a change of the fleet (it would discard the dispatcher's set-aside tasks for nothing).
        agent = self.agents.get(agent_id)
        if agent is not None and assignment_id in agent.open:
            self._set_open(agent, lambda open_: open_.discard(assignment_id))

    def refused_recently(self, task_id: uuid.UUID) -> set[str]:
        """Agents that refused ``task_id`` within the cool-down: not offered it again until it passes."""
        refusals = self.rejections.get(task_id)
        if not refusals:
            return set()
        cutoff = time.monotonic() - REFUSAL_COOLDOWN
        return {agent_id for agent_id, at in refusals.items() if at > cutoff}

    def leased(self, agent_id: str, assignment_id: uuid.UUID) -> None:
        agent = self.agents.get(agent_id)
        if agent is not None and assignment_id not in agent.open:  # placement reserved it already: no-op
            self._set_open(agent, lambda open_: open_.add(assignment_id))

    def resync(self, open_by_agent: dict[str, set[uuid.UUID]]) -> None:
        """Replace the open sets with the database's truth (a periodic safety net)."""
        for agent_id, agent in self.agents.items():
            truth = open_by_agent.get(agent_id, set())
            if agent.open != truth:

                def replace(open_: set[uuid.UUID], truth: set[uuid.UUID] = truth) -> None:
                    open_.clear()
                    open_.update(truth)

                self._set_open(agent, replace)

    def candidates(self) -> list[Candidate]:
        return [
            agent.candidate()
            for agent in self.agents.values()
            if agent.status == "active" and len(agent.open) < agent.max_concurrency
        ]

    def claim_scope(self) -> ClaimScope:
        """What the active agents here could take: their capabilities, models, ids and task types (None: some
        agent takes any type), for the claim query. Counted as agents join, leave or change status, and
        rebuilt only after such a change."""
        if self._scope is None:
            self._scope = ClaimScope(
                sorted(name for name, count in self._capabilities.items() if count > 0),
                sorted(model for model, count in self._models.items() if count > 0),
                list(self._active),
                None if self._any_type > 0 else sorted(t for t, count in self._types.items() if count > 0),
            )
        return self._scope

    def spare(self) -> int:
        """Free slots across the active agents."""
        return self._spare

    def any_full(self) -> bool:
        """Some active agent has no room: tasks only it could take may be waiting unclaimed."""
        return self._full > 0

    def utilization(self) -> list[tuple[str, str, float]]:
        return [
            (agent.id, agent.model, min(1.0, len(agent.open) / agent.max_concurrency))
            for agent in self.agents.values()
        ]
