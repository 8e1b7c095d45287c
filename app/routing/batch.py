"""Routing a whole claimed batch at once, with exactly the decisions repeated pick() calls would make.

pick() recomputes everything for every task; across a batch most of it does not change: which agents may
take a kind of task, and every term of the score but the load. So candidates are filtered once per kind
of task, each agent's load-independent fit (strategies.fit) is computed once, and only the load is looked
at per task. The ordering itself is strategies.rank, the same function pick() uses, so the decisions are the
same by construction (a test also compares the two on random fleets).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from app.routing.scoring import Weights
from app.routing.strategies import (
    Candidate,
    Decision,
    Fit,
    Rank,
    RoutingPolicy,
    TaskRequirements,
    decision_of,
    eligible,
    fit,
    get_strategy,
    next_in_rotation,
    rank,
)


def route_batch(
    tasks: Sequence[TaskRequirements],
    candidates: Sequence[Candidate],
    policy: RoutingPolicy,
    *,
    last_agent_id: str | None = None,
    fits: FitCache | None = None,
) -> tuple[list[Decision | None], str | None]:
    """Decide every task in order, counting each decision against the chosen agent's free slots.

    Returns the decisions (None: nobody can take that task now) and the last agent picked, for round robin.
    ``fits``: fits remembered from earlier calls with the same policy (the dispatcher's), so a single task
    placed at submit does not compute every agent's fit again.
    """
    active = {c.agent_id: c.active for c in candidates}
    limit = {c.agent_id: c.max_concurrency for c in candidates}
    groups: dict[TaskRequirements, _Group] = {}
    decisions: list[Decision | None] = []
    for task in tasks:
        group = groups.get(task)
        if group is None:
            strategy = task.strategy or policy.strategy
            get_strategy(strategy)  # unknown names fail here, as in pick()
            matched = _fits(task, candidates, policy) if fits is None else fits.of(task, candidates, policy)
            group = groups[task] = _Group(strategy, matched, policy.weights)
        decision = group.decide(active, limit, last_agent_id)
        if decision is not None:
            active[decision.agent_id] += 1
            last_agent_id = decision.agent_id
        decisions.append(decision)
    return decisions, last_agent_id


def _fits(task: TaskRequirements, candidates: Sequence[Candidate], policy: RoutingPolicy) -> list[Fit]:
    return [fit(task, candidate, policy) for candidate in eligible(task, candidates, policy, any_load=True)]


_Kind = tuple[frozenset[str], int]  # of a task: its required capabilities and estimated tokens
_AgentRecord = tuple[str, frozenset[str], float]  # of an agent: its model, capabilities and success rate


class FitCache:
    """Fits by what a fit depends on, for one routing policy: of the task, its required capabilities and
    estimated tokens (not its cost cap, model, type or agent list: those decide eligibility, checked afresh);
    of the agent, its model, capabilities and success rate (not its load). An entry is reused while those are
    unchanged, so between two tasks of a kind only the agents whose record changed are fitted again. Bounded
    in entries, not kinds: past MAX_ENTRIES it starts over (a fleet of 10,000 agents is 10,000 per kind)."""

    MAX_ENTRIES = 32_768

    def __init__(self) -> None:
        self._policy: RoutingPolicy | None = None
        self._kinds: dict[
            tuple[frozenset[str], int], dict[str, tuple[tuple[str, frozenset[str], float], Fit]]
        ]
        self._kinds = {}
        self._entries = 0

    def of(self, task: TaskRequirements, candidates: Sequence[Candidate], policy: RoutingPolicy) -> list[Fit]:
        if policy is not self._policy:
            self._policy, self._kinds, self._entries = policy, {}, 0
        kind = self._kinds.setdefault((task.required_capabilities, task.estimated_tokens), {})
        fits: list[Fit] = []
        for candidate in eligible(task, candidates, policy, any_load=True):
            key = (candidate.model, candidate.capabilities, candidate.success_rate)
            known = kind.get(candidate.agent_id)
            if known is None or known[0] != key:
                if known is None:
                    if self._entries >= self.MAX_ENTRIES:  # agents that left, kinds seen once: start over
                        self._kinds.clear()
                        self._entries = 0
                        kind = self._kinds[(task.required_capabilities, task.estimated_tokens)] = {}
                    self._entries += 1
                known = kind[candidate.agent_id] = (key, fit(task, candidate, policy))
            fits.append(known[1])
        return fits


class _Group:
    """The agents that may take one kind of task, ordered best first.

    A heap with lazy refresh: within a batch loads only grow, so every rank only grows, and a stale entry
    at the top is refreshed and pushed back until the top is current, which is then the true best.
    """

    def __init__(self, strategy: str, fits: list[Fit], weights: Weights) -> None:
        self.strategy = strategy
        self.weights = weights
        self.by_id = {agent.agent_id: agent for agent in fits}
        self.heap: list[tuple[Rank, int, str]] = []  # (rank, the active count it was computed with, agent)
        self.ordered: list[str] = []  # round robin's rotation order, by agent_id
        self.started = False

    def _rank(self, agent_id: str, active: dict[str, int], limit: dict[str, int]) -> Rank:
        return rank(self.strategy, self.by_id[agent_id], active[agent_id], limit[agent_id], self.weights)

    def decide(self, active: dict[str, int], limit: dict[str, int], last: str | None) -> Decision | None:
        if self.strategy == "round_robin":
            if not self.started:
                self.started = True
                self.ordered = sorted(self.by_id)  # the rotation order
            chosen = next_in_rotation(self.ordered, last, lambda agent_id: active[agent_id] < limit[agent_id])
            return None if chosen is None else Decision(chosen, 0.0, self.by_id[chosen].cost)
        if not self.started:
            self.started = True
            self.heap = [
                (self._rank(agent_id, active, limit), active[agent_id], agent_id) for agent_id in self.by_id
            ]
            heapq.heapify(self.heap)
        while self.heap:
            key, used, agent_id = self.heap[0]
            if active[agent_id] >= limit[agent_id]:
                heapq.heappop(self.heap)  # full for the rest of the batch
            elif used != active[agent_id]:
                heapq.heapreplace(
                    self.heap, (self._rank(agent_id, active, limit), active[agent_id], agent_id)
                )
            else:
                return decision_of(self.strategy, self.by_id[agent_id], key)
        return None
