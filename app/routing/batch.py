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
) -> tuple[list[Decision | None], str | None]:
    """Decide every task in order, counting each decision against the chosen agent's free slots.

    Returns the decisions (None: nobody can take that task now) and the last agent picked, for round robin.
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
            group = groups[task] = _Group(strategy, _fits(task, candidates, policy), policy.weights)
        decision = group.decide(active, limit, last_agent_id)
        if decision is not None:
            active[decision.agent_id] += 1
            last_agent_id = decision.agent_id
        decisions.append(decision)
    return decisions, last_agent_id


def _fits(task: TaskRequirements, candidates: Sequence[Candidate], policy: RoutingPolicy) -> list[Fit]:
    return [fit(task, candidate, policy) for candidate in eligible(task, candidates, policy, any_load=True)]


class _Group:
    """The agents that may take one kind of task, ordered best first.

    A heap with lazy refresh: within a batch loads only grow, so every rank only grows, and a stale entry
    at the top is refreshed and pushed back until the top is current, which is then the true best.
    """

    def __init__(self, strategy: str, fits: list[Fit], weights: Weights) -> None:
        self.strategy = strategy
        self.weights = weights
        self.by_id = {agent.agent_id: agent for agent in fits}
        self.ordered = sorted(self.by_id)  # round robin's rotation order
        self.heap: list[tuple[Rank, int, str]] = []  # (rank, the active count it was computed with, agent)
        self.started = False

    def _rank(self, agent_id: str, active: dict[str, int], limit: dict[str, int]) -> Rank:
        return rank(self.strategy, self.by_id[agent_id], active[agent_id], limit[agent_id], self.weights)

    def decide(self, active: dict[str, int], limit: dict[str, int], last: str | None) -> Decision | None:
        if self.strategy == "round_robin":
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
