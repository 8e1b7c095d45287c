"""The arithmetic of routing: prices, capability match, load and the weighted score.

Pure functions over plain values so the strategies, the dispatcher and the tests share one definition of
"cost" and "score" and none of them needs a database or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1,000 tokens of one model."""

    input_per_1k: float
    output_per_1k: float


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each factor counts in the capability-based score; the defaults are the seed's."""

    capability: float = 0.4
    performance: float = 0.3
    load: float = 0.2
    cost: float = 0.1


def estimate_cost(estimated_tokens: int, price: Price | None) -> float:
    """Expected USD cost of a task before it runs.

    The split between prompt and completion is unknown until the agent reports usage, so the estimate assumes
    half of the tokens each way. A model without a price costs nothing: refusing it would make every unpriced
    local model unroutable under a cost cap.
    """
    if price is None:
        return 0.0
    # A negative estimate would produce a negative cost and slip under any cap.
    half_in_thousands = max(estimated_tokens, 0) / 2 / 1000
    return half_in_thousands * price.input_per_1k + half_in_thousands * price.output_per_1k


def cost_of_usage(input_tokens: int, output_tokens: int, price: Price | None) -> float:
    """Actual USD cost of the tokens an agent reported; 0.0 for a model without a price."""
    if price is None:
        return 0.0
    return (
        max(input_tokens, 0) / 1000 * price.input_per_1k + max(output_tokens, 0) / 1000 * price.output_per_1k
    )


def capability_score(required: frozenset[str], offered: frozenset[str]) -> float:
    """How well an agent's capabilities fit a task, in [0, 1].

    0.0 when any required capability is missing. Otherwise the share of the agent's capabilities the task
    uses, so a specialist outranks a generalist and the generalist stays free for the tasks only it can do.
    A task that requires nothing fits everyone equally (1.0).
    """
    if not required:
        return 1.0
    if not required <= offered:
        return 0.0
    # offered is a superset of a non-empty set here, so it is never empty.
    return len(required) / len(offered)


def load_ratio(active: int, max_concurrency: int) -> float:
    """Fraction of an agent's slots in use, clamped to [0, 1].

    An agent that declares no slots counts as full rather than dividing by zero.
    """
    if max_concurrency <= 0:
        return 1.0
    return min(max(active / max_concurrency, 0.0), 1.0)


def static_terms(capability: float, success_rate: float, weights: Weights) -> float:
    """The load-independent terms of the weighted score: capability match and success rate."""
    return capability * weights.capability + success_rate * weights.performance


def cost_term(cost: float, weights: Weights) -> float:
    """The weighted score's cost term, 1 / (1 + cost)."""
    # A negative cost (a misconfigured price) would otherwise divide by zero at -1 or blow the term up.
    return 1.0 / (1.0 + max(cost, 0.0)) * weights.cost


def weighted_score(
    *, capability: float, success_rate: float, load: float, cost: float, weights: Weights
) -> float:
    """The seed's capability-based score: higher is better.

    Load and cost are inverted (1 - load, 1 / (1 + cost)) so every term rewards the better agent. Routing
    computes it in these parts (strategies.rank), the load term last-but-one, in this order.
    """
    return (
        static_terms(capability, success_rate, weights)
        + (1.0 - load) * weights.load
        + cost_term(cost, weights)
    )
