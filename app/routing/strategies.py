"""Choose one agent for one task: the eligibility filter and the routing strategies.

Pure: frozen values in, a Decision out. The dispatcher gathers the candidates (and remembers the last
round-robin pick), so these functions never read a database, a socket or the clock and every choice is
reproducible from its inputs. Every strategy breaks ties on agent_id, so equal inputs give equal answers on
every replica.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from app.routing.scoring import (
    Price,
    Weights,
    capability_score,
    cost_term,
    estimate_cost,
    load_ratio,
    static_terms,
)

# 3,000 tokens of titan-v2 estimate to 0.0006000000000000001 in floats; a task capped at exactly its
# estimate must still route.
COST_TOLERANCE = 1e-12


@dataclass(frozen=True, slots=True)
class Candidate:
    """One connected agent as the dispatcher sees it at the moment of routing."""

    agent_id: str
    model: str
    capabilities: frozenset[str]
    max_concurrency: int
    active: int  # open assignments right now
    success_rate: float = 1.0  # 0..1
    status: str = "active"  # active | draining | unhealthy | quarantined | offline | error
    task_types: frozenset[str] | None = None  # the types it handles (register's task_types); None: any
    # Capability name -> the version the agent declared for it ("" when it declared none).
    versions: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class TaskRequirements:
    """What routing needs to know of a task."""

    required_capabilities: frozenset[str]
    model: str | None = None  # a task may demand one model
    max_cost: float | None = None  # per-task cost cap (USD)
    estimated_tokens: int = 1000
    agent_ids: frozenset[str] | None = None  # when set, only these agents may take it
    strategy: str | None = None  # per-task override of the configured strategy
    task_type: str | None = None  # offered only to agents that handle it (or handle any type)
    # (capability, lowest version) pairs: the agent's declared version must be at least this.
    min_versions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The operator's routing configuration."""

    strategy: str = "capability_based"  # capability_based | round_robin | least_loaded
    weights: Weights = Weights()
    allowed_models: frozenset[str] = frozenset()  # empty = every model allowed
    # Global cap; a task's own max_cost applies too and the lower of the two wins.
    cost_limit_per_task: float | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    agent_id: str
    score: float
    estimated_cost: float


class Strategy(Protocol):
    """Picks one of candidates that eligible() already admitted; None when there are none."""

    def __call__(
        self,
        task: TaskRequirements,
        candidates: Sequence[Candidate],
        policy: RoutingPolicy,
        *,
        last_agent_id: str | None = None,
    ) -> Decision | None: ...


def _estimated_cost(task: TaskRequirements, candidate: Candidate, policy: RoutingPolicy) -> float:
    return estimate_cost(task.estimated_tokens, policy.prices.get(candidate.model))


def _cost_cap(task: TaskRequirements, policy: RoutingPolicy) -> float | None:
    caps = [cap for cap in (task.max_cost, policy.cost_limit_per_task) if cap is not None]
    return min(caps) if caps else None


def version_key(version: str) -> tuple[int, ...] | None:
    """``"1.2.10"`` -> (1, 2, 10); a leading ``v`` is allowed; None when it is not dotted numbers."""
    text = version.strip().removeprefix("v")
    parts = text.split(".")
    if not text or not all(part.isdigit() for part in parts):
        return None
    key = tuple(int(part) for part in parts)
    while len(key) > 1 and key[-1] == 0:  # 1.2 == 1.2.0
        key = key[:-1]
    return key


def version_at_least(declared: str, minimum: str) -> bool:
    """Whether a declared capability version meets a minimum, both dotted numbers. A version that is not
    (none declared, or free text) meets no minimum: an agent must say which version it has to qualify."""
    have, need = version_key(declared), version_key(minimum)
    return have is not None and need is not None and have >= need


def model_for_attempt(
    model: str | None, fallback_models: Sequence[str] | None, attempts: int, fallback_after: int
) -> str | None:
    """The model a task asks for now: ``model`` until ``fallback_after`` attempts have been charged, then
    each of ``fallback_models`` in order, one attempt each, the last one for every attempt after."""
    if not fallback_models or attempts < fallback_after:
        return model
    return fallback_models[min(attempts - fallback_after, len(fallback_models) - 1)]


def handles(task_types: frozenset[str] | None, task_type: str | None) -> bool:
    return task_types is None or task_type is None or task_type in task_types


def _admits(
    task: TaskRequirements,
    candidate: Candidate,
    policy: RoutingPolicy,
    cost_cap: float | None,
    *,
    any_load: bool = False,
) -> bool:
    # Only "active" takes work: busy agents said so themselves, draining ones are leaving, and the rest are
    # not (or no longer) known to be alive.
    if candidate.status != "active":
        return False
    if candidate.active >= candidate.max_concurrency and not (any_load and candidate.max_concurrency > 0):
        return False
    if not task.required_capabilities <= candidate.capabilities:
        return False
    if not handles(candidate.task_types, task.task_type):
        return False
    if task.min_versions and not all(
        version_at_least(candidate.versions.get(name, ""), minimum) for name, minimum in task.min_versions
    ):
        return False
    if policy.allowed_models and candidate.model not in policy.allowed_models:
        return False
    if task.model is not None and candidate.model != task.model:
        return False
    if task.agent_ids is not None and candidate.agent_id not in task.agent_ids:
        return False
    return cost_cap is None or _estimated_cost(task, candidate, policy) <= cost_cap + COST_TOLERANCE


def eligible(
    task: TaskRequirements, candidates: Sequence[Candidate], policy: RoutingPolicy, *, any_load: bool = False
) -> list[Candidate]:
    """The candidates allowed to take task, in their given order.

    An agent qualifies when it is "active", has a free slot (active < max_concurrency), offers every
    required capability (at task.min_versions' versions or later), handles task.task_type (or any type),
    runs a model the policy allows (any, when allowed_models is empty) and the task
    asks for (when it names one), is among task.agent_ids (when set), and its estimated cost is within the
    lower of task.max_cost and policy.cost_limit_per_task (when either is set). ``any_load``: whether a slot
    is free is left to the caller (a batch router decides it per task, as loads change).
    """
    cost_cap = _cost_cap(task, policy)
    return [c for c in candidates if _admits(task, c, policy, cost_cap, any_load=any_load)]


@dataclass(frozen=True, slots=True)
class Fit:
    """The part of one agent's fit for one task that does not depend on its load: computed once per agent
    and kind of task, whether one task is routed (pick) or a whole batch (routing.batch)."""

    agent_id: str
    static: float  # the capability and performance terms of the weighted score
    cost_term: float  # the cost term of the weighted score
    cost: float  # estimated USD


def fit(task: TaskRequirements, candidate: Candidate, policy: RoutingPolicy) -> Fit:
    cost = _estimated_cost(task, candidate, policy)
    return Fit(
        agent_id=candidate.agent_id,
        static=static_terms(
            capability_score(task.required_capabilities, candidate.capabilities),
            candidate.success_rate,
            policy.weights,
        ),
        cost_term=cost_term(cost, policy.weights),
        cost=cost,
    )


Rank = tuple[float, float, str]


def rank(strategy: str, agent: Fit, active: int, slots: int, weights: Weights) -> Rank:
    """The one ordering of agents for a task (smaller is better), for capability_based and least_loaded.

    capability_based: the highest weighted score, ties to the lower load ratio, then the smaller agent_id.
    least_loaded: the lowest load ratio, ties to more spare slots, then the smaller agent_id.
    """
    load = load_ratio(active, slots)
    if strategy == "least_loaded":
        return (load, float(active - slots), agent.agent_id)
    # static + load + cost in weighted_score()'s order, so the sum is bit-for-bit the same.
    return (-(agent.static + (1.0 - load) * weights.load + agent.cost_term), load, agent.agent_id)


def decision_of(strategy: str, agent: Fit, best: Rank) -> Decision:
    score = 1.0 - best[0] if strategy == "least_loaded" else -best[0]
    return Decision(agent_id=agent.agent_id, score=score, estimated_cost=agent.cost)


def next_in_rotation(
    ordered: Sequence[str], last_agent_id: str | None, has_room: Callable[[str], bool]
) -> str | None:
    """Round robin: the first agent (ordered by agent_id) after last_agent_id that has room, wrapping."""
    start = 0 if last_agent_id is None else bisect.bisect_right(ordered, last_agent_id)
    for index in range(len(ordered)):
        agent_id = ordered[(start + index) % len(ordered)]
        if has_room(agent_id):
            return agent_id
    return None


def _ranked(
    strategy: str, task: TaskRequirements, candidates: Sequence[Candidate], policy: RoutingPolicy
) -> Decision | None:
    best: tuple[Rank, Fit] | None = None
    for candidate in candidates:
        agent = fit(task, candidate, policy)
        key = rank(strategy, agent, candidate.active, candidate.max_concurrency, policy.weights)
        if best is None or key < best[0]:
            best = (key, agent)
    return None if best is None else decision_of(strategy, best[1], best[0])


def capability_based(
    task: TaskRequirements,
    candidates: Sequence[Candidate],
    policy: RoutingPolicy,
    *,
    last_agent_id: str | None = None,
) -> Decision | None:
    """The highest weighted_score of capability match, success rate, 1 - load and 1 / (1 + cost).

    Ties go to the lower load ratio, then to the smaller agent_id. last_agent_id is ignored.
    """
    return _ranked("capability_based", task, candidates, policy)


def round_robin(
    task: TaskRequirements,
    candidates: Sequence[Candidate],
    policy: RoutingPolicy,
    *,
    last_agent_id: str | None = None,
) -> Decision | None:
    """The first candidate, by agent_id ascending, whose agent_id is greater than last_agent_id.

    Wraps to the smallest agent_id when none is greater or last_agent_id is None. The rotation lives in the
    caller (it passes back the agent it picked last time) so this stays pure and works across replicas;
    because the position is an agent_id rather than an index, agents joining or leaving do not make the
    rotation skip or repeat the others. Score is always 0.0: the order, not a score, decides.
    """
    by_id = {candidate.agent_id: candidate for candidate in candidates}
    chosen = next_in_rotation(sorted(by_id), last_agent_id, lambda _: True)
    if chosen is None:
        return None
    return Decision(agent_id=chosen, score=0.0, estimated_cost=_estimated_cost(task, by_id[chosen], policy))


def least_loaded(
    task: TaskRequirements,
    candidates: Sequence[Candidate],
    policy: RoutingPolicy,
    *,
    last_agent_id: str | None = None,
) -> Decision | None:
    """The lowest load ratio (active / max_concurrency).

    Ties go to more spare slots (max_concurrency - active), then to the smaller agent_id. Score is the free
    share, 1 - load. last_agent_id is ignored.
    """
    return _ranked("least_loaded", task, candidates, policy)


STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        "capability_based": capability_based,
        "round_robin": round_robin,
        "least_loaded": least_loaded,
    }
)


def get_strategy(name: str) -> Strategy:
    """The strategy registered under name; ValueError naming it and the known ones otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown routing strategy {name!r}; known strategies: {known}") from None


def pick(
    task: TaskRequirements,
    candidates: Sequence[Candidate],
    policy: RoutingPolicy,
    *,
    last_agent_id: str | None = None,
) -> Decision | None:
    """Route task: filter with eligible(), then apply task.strategy or else policy.strategy.

    None means no candidate qualifies (the task waits; it is not an error). An unknown strategy name raises
    ValueError even when there are no candidates, so a misconfiguration shows up at once rather than only
    when the fleet is busy.
    """
    strategy = get_strategy(task.strategy or policy.strategy)
    return strategy(task, eligible(task, candidates, policy), policy, last_agent_id=last_agent_id)
