"""Routing a whole claimed batch at once, with exactly the decisions repeated pick() calls would make.

pick() recomputes everything for every task; across a batch most of it does not change: which agents may
take a kind of task, and every term of the score but the load. So candidates are filtered once per kind
of task, the load-independent part of each score is computed once, and only the load is looked at per
task. The floating-point operations happen in the same order as in weighted_score(), so scores, and
therefore ties, are bit-for-bit the same (a test compares the two on random fleets).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from app.routing.scoring import capability_score, load_ratio
from app.routing.strategies import (
    Candidate,
    Decision,
    RoutingPolicy,
    TaskRequirements,
    _estimated_cost,
    eligible,
    get_strategy,
)


@dataclass
class _Option:
    agent_id: str
    static: float  # capability and performance terms, summed as weighted_score sums them
    cost_term: float
    cost: float


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
            group = groups[task] = _Group(strategy, _options(task, candidates, policy), policy.weights.load)
        decision = group.decide(active, limit, last_agent_id)
        if decision is not None:
            active[decision.agent_id] += 1
            last_agent_id = decision.agent_id
        decisions.append(decision)
    return decisions, last_agent_id


def _options(task: TaskRequirements, candidates: Sequence[Candidate], policy: RoutingPolicy) -> list[_Option]:
    # eligible() with every slot free: whether a slot is free is decided per task, as loads change.
    idle = [Candidate(c.agent_id, c.model, c.capabilities, c.max_concurrency, 0, c.success_rate, c.status)
            for c in candidates if c.max_concurrency > 0]  # fmt: skip
    weights = policy.weights
    options = []
    for candidate in eligible(task, idle, policy):
        cost = _estimated_cost(task, candidate, policy)
        static = (
            capability_score(task.required_capabilities, candidate.capabilities) * weights.capability
            + candidate.success_rate * weights.performance
        )
        cost_term = 1.0 / (1.0 + max(cost, 0.0)) * weights.cost
        options.append(_Option(candidate.agent_id, static, cost_term, cost))
    return options


Key = tuple[float, float, str]


class _Group:
    """The agents that may take one kind of task, ordered best first.

    A heap with lazy refresh: within a batch loads only grow, so every key only grows, and a stale entry
    at the top is refreshed and pushed back until the top is current, which is then the true best.
    """

    def __init__(self, strategy: str, options: list[_Option], load_weight: float) -> None:
        self.strategy = strategy
        self.load_weight = load_weight
        self.by_id = {option.agent_id: option for option in options}
        self.ordered = sorted(self.by_id)  # round robin's rotation order
        self.heap: list[tuple[Key, int, str]] = []  # (key, the active count it was computed with, agent)
        self.started = False

    def _key(self, option: _Option, used: int, slots: int) -> Key:
        load = load_ratio(used, slots)
        if self.strategy == "least_loaded":
            return (load, float(used - slots), option.agent_id)
        return (-(option.static + (1.0 - load) * self.load_weight + option.cost_term), load, option.agent_id)

    def decide(self, active: dict[str, int], limit: dict[str, int], last: str | None) -> Decision | None:
        if self.strategy == "round_robin":
            return self._next_in_rotation(active, limit, last)
        if not self.started:
            self.started = True
            for agent_id, option in self.by_id.items():
                self.heap.append(
                    (self._key(option, active[agent_id], limit[agent_id]), active[agent_id], agent_id)
                )
            heapq.heapify(self.heap)
        while self.heap:
            key, used, agent_id = self.heap[0]
            if active[agent_id] >= limit[agent_id]:
                heapq.heappop(self.heap)  # full for the rest of the batch
                continue
            if used != active[agent_id]:
                heapq.heapreplace(
                    self.heap,
                    (
                        self._key(self.by_id[agent_id], active[agent_id], limit[agent_id]),
                        active[agent_id],
                        agent_id,
                    ),
                )
                continue
            option = self.by_id[agent_id]
            if self.strategy == "least_loaded":
                return Decision(agent_id=agent_id, score=1.0 - key[0], estimated_cost=option.cost)
            return Decision(agent_id=agent_id, score=-key[0], estimated_cost=option.cost)
        return None

    def _next_in_rotation(
        self, active: dict[str, int], limit: dict[str, int], last: str | None
    ) -> Decision | None:
        ordered = self.ordered
        start = 0 if last is None else bisect.bisect_right(ordered, last)
        for index in range(len(ordered)):
            agent_id = ordered[(start + index) % len(ordered)]
            if active[agent_id] < limit[agent_id]:
                return Decision(agent_id=agent_id, score=0.0, estimated_cost=self.by_id[agent_id].cost)
        return None
