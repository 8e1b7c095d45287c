"""Choose one agent for one task: the eligibility filter and the routing strategies.

Pure: frozen values in, a Decision out. The dispatcher gathers the candidates (and remembers the last
round-robin pick), so these functions never read a database, a socket or the clock and every choice is
reproducible from its inputs. Every strategy breaks ties on agent_id, so equal inputs give equal answers on
every replica.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from app.routing.scoring import Price, Weights, capability_score, estimate_cost, load_ratio, weighted_score

# 3,000 tokens of titan-v2 estimate to 0.0006000000000000001 in floats; a task capped at exactly its
# estimate must still route.
_COST_TOLERANCE = 1e-12


@dataclass(frozen=True, slots=True)
class Candidate:
    """One connected agent as the dispatcher sees it at the moment of routing."""

    agent_id: str
    model: str
    capabilities: frozenset[str]
    max_concurrency: int
    active: int  # open assignments right now
    success_rate: float = 1.0  # 0..1
    status: str = "active"  # active | busy | draining | unhealthy | offline | registering | error


@dataclass(frozen=True, slots=True)
class TaskRequirements:
    """What routing needs to know of a task."""

    required_capabilities: frozenset[str]
    model: str | None = None  # a task may demand one model
    max_cost: float | None = None  # per-task cost cap (USD)
    estimated_tokens: int = 1000
    agent_ids: frozenset[str] | None = None  # when set, only these agents may take it
    strategy: str | None = None  # per-task override of the configured strategy


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


def _admits(
    task: TaskRequirements, candidate: Candidate, policy: RoutingPolicy, cost_cap: float | None
) -> bool:
    # Only "active" takes work: busy agents said so themselves, draining ones are leaving, and the rest are
    # not (or no longer) known to be alive.
    if candidate.status != "active":
        return False
    if candidate.active >= candidate.max_concurrency:
        return False
    if not task.required_capabilities <= candidate.capabilities:
        return False
    if policy.allowed_models and candidate.model not in policy.allowed_models:
        return False
    if task.model is not None and candidate.model != task.model:
        return False
    if task.agent_ids is not None and candidate.agent_id not in task.agent_ids:
        return False
    return cost_cap is None or _estimated_cost(task, candidate, policy) <= cost_cap + _COST_TOLERANCE


def eligible(
    task: TaskRequirements, candidates: Sequence[Candidate], policy: RoutingPolicy
) -> list[Candidate]:
    """The candidates allowed to take task, in their given order.

    An agent qualifies when it is "active", has a free slot (active < max_concurrency), offers every
    required capability, runs a model the policy allows (any, when allowed_models is empty) and the task
    asks for (when it names one), is among task.agent_ids (when set), and its estimated cost is within the
    lower of task.max_cost and policy.cost_limit_per_task (when either is set).
    """
    cost_cap = _cost_cap(task, policy)
    return [candidate for candidate in candidates if _admits(task, candidate, policy, cost_cap)]


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
    ranked: list[tuple[float, float, str, float]] = []
    for candidate in candidates:
        cost = _estimated_cost(task, candidate, policy)
        load = load_ratio(candidate.active, candidate.max_concurrency)
        score = weighted_score(
            capability=capability_score(task.required_capabilities, candidate.capabilities),
            success_rate=candidate.success_rate,
            load=load,
            cost=cost,
            weights=policy.weights,
        )
        # Negated so that min() orders score descending and the tie-breaks ascending.
        ranked.append((-score, load, candidate.agent_id, cost))
    if not ranked:
        return None
    negated_score, _, agent_id, cost = min(ranked)
    return Decision(agent_id=agent_id, score=-negated_score, estimated_cost=cost)


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
    ordered = sorted(candidates, key=lambda candidate: candidate.agent_id)
    if not ordered:
        return None
    chosen = ordered[0]
    if last_agent_id is not None:
        chosen = next((c for c in ordered if c.agent_id > last_agent_id), ordered[0])
    return Decision(agent_id=chosen.agent_id, score=0.0, estimated_cost=_estimated_cost(task, chosen, policy))


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
    if not candidates:
        return None

    def rank(candidate: Candidate) -> tuple[float, int, str]:
        spare = candidate.max_concurrency - candidate.active
        return (load_ratio(candidate.active, candidate.max_concurrency), -spare, candidate.agent_id)

    chosen = min(candidates, key=rank)
    return Decision(
        agent_id=chosen.agent_id,
        score=1.0 - load_ratio(chosen.active, chosen.max_concurrency),
        estimated_cost=_estimated_cost(task, chosen, policy),
    )


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
