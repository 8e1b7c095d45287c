from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import get_args

import pytest

from app.config import RoutingStrategyName
from app.routing.scoring import Price, Weights
from app.routing.strategies import (
    STRATEGIES,
    Candidate,
    RoutingPolicy,
    TaskRequirements,
    capability_based,
    eligible,
    get_strategy,
    least_loaded,
    pick,
    round_robin,
)

PRICES = {
    "gpt-4": Price(input_per_1k=0.03, output_per_1k=0.06),  # 1,000 tokens estimate to 0.045
    "claude-3-haiku": Price(input_per_1k=0.00025, output_per_1k=0.00125),  # 0.00075
    "titan-v2": Price(input_per_1k=0.0002, output_per_1k=0.0002),  # 3,000 tokens -> 0.0006 (+ float noise)
}


def agent(
    agent_id: str,
    *,
    model: str = "gpt-4",
    caps: Iterable[str] = ("code",),
    max_concurrency: int = 4,
    active: int = 0,
    success_rate: float = 1.0,
    status: str = "active",
) -> Candidate:
    return Candidate(
        agent_id=agent_id,
        model=model,
        capabilities=frozenset(caps),
        max_concurrency=max_concurrency,
        active=active,
        success_rate=success_rate,
        status=status,
    )


def task(
    caps: Iterable[str] = ("code",),
    *,
    model: str | None = None,
    max_cost: float | None = None,
    estimated_tokens: int = 1000,
    agent_ids: Iterable[str] | None = None,
    strategy: str | None = None,
) -> TaskRequirements:
    return TaskRequirements(
        required_capabilities=frozenset(caps),
        model=model,
        max_cost=max_cost,
        estimated_tokens=estimated_tokens,
        agent_ids=None if agent_ids is None else frozenset(agent_ids),
        strategy=strategy,
    )


DEFAULT_POLICY = RoutingPolicy(prices=PRICES)


def test_registry_matches_the_configurable_names() -> None:
    assert set(STRATEGIES) == set(get_args(RoutingStrategyName))


# --- eligible(): every rule has a case that admits and one that refuses ---------------------------------

ELIGIBILITY_CASES = [
    pytest.param(agent("a"), task(), DEFAULT_POLICY, True, id="status-active-admitted"),
    *[
        pytest.param(agent("a", status=status), task(), DEFAULT_POLICY, False, id=f"status-{status}-refused")
        for status in ("busy", "draining", "unhealthy", "quarantined", "offline", "error")
    ],
    pytest.param(agent("a", active=3, max_concurrency=4), task(), DEFAULT_POLICY, True, id="one-slot-free"),
    pytest.param(agent("a", active=4, max_concurrency=4), task(), DEFAULT_POLICY, False, id="no-slot-free"),
    pytest.param(agent("a", max_concurrency=0), task(), DEFAULT_POLICY, False, id="no-slots-at-all"),
    pytest.param(
        agent("a", caps={"code", "web"}), task({"code", "web"}), DEFAULT_POLICY, True, id="has-all-caps"
    ),
    pytest.param(agent("a", caps={"code"}), task({"code", "web"}), DEFAULT_POLICY, False, id="lacks-one-cap"),
    pytest.param(agent("a", caps=()), task(()), DEFAULT_POLICY, True, id="nothing-required"),
    pytest.param(agent("a"), task(), RoutingPolicy(), True, id="empty-allow-list-allows-all"),
    pytest.param(
        agent("a", model="gpt-4"),
        task(),
        RoutingPolicy(allowed_models=frozenset({"gpt-4", "claude-3-haiku"})),
        True,
        id="model-allowed",
    ),
    pytest.param(
        agent("a", model="gpt-4"),
        task(),
        RoutingPolicy(allowed_models=frozenset({"claude-3-haiku"})),
        False,
        id="model-not-allowed",
    ),
    pytest.param(agent("a", model="gpt-4"), task(model="gpt-4"), DEFAULT_POLICY, True, id="task-model-match"),
    pytest.param(
        agent("a", model="gpt-4"),
        task(model="claude-3-haiku"),
        DEFAULT_POLICY,
        False,
        id="task-model-mismatch",
    ),
    pytest.param(agent("a"), task(agent_ids={"a", "b"}), DEFAULT_POLICY, True, id="agent-in-agent-ids"),
    pytest.param(agent("a"), task(agent_ids={"b"}), DEFAULT_POLICY, False, id="agent-not-in-agent-ids"),
    pytest.param(agent("a"), task(agent_ids=()), DEFAULT_POLICY, False, id="empty-agent-ids-admit-none"),
    pytest.param(agent("a"), task(max_cost=0.05), DEFAULT_POLICY, True, id="task-cap-above-estimate"),
    pytest.param(agent("a"), task(max_cost=0.04), DEFAULT_POLICY, False, id="task-cap-below-estimate"),
    pytest.param(
        agent("a"),
        task(),
        RoutingPolicy(prices=PRICES, cost_limit_per_task=0.05),
        True,
        id="policy-cap-above",
    ),
    pytest.param(
        agent("a"),
        task(),
        RoutingPolicy(prices=PRICES, cost_limit_per_task=0.04),
        False,
        id="policy-cap-below",
    ),
    pytest.param(
        agent("a"),
        task(max_cost=1.0),
        RoutingPolicy(prices=PRICES, cost_limit_per_task=0.04),
        False,
        id="lower-policy-cap-wins",
    ),
    pytest.param(
        agent("a"),
        task(max_cost=0.04),
        RoutingPolicy(prices=PRICES, cost_limit_per_task=1.0),
        False,
        id="lower-task-cap-wins",
    ),
    pytest.param(
        agent("a", model="titan-v2"),
        task(max_cost=0.0006, estimated_tokens=3000),
        DEFAULT_POLICY,
        True,
        id="cap-equal-to-estimate-despite-float-noise",
    ),
    pytest.param(
        agent("a", model="gpt-4"),
        task(max_cost=0.0451, estimated_tokens=2000),
        DEFAULT_POLICY,
        False,
        id="more-tokens-cost-more",
    ),
    pytest.param(
        agent("a", model="local-llama"),
        task(max_cost=0.0001),
        DEFAULT_POLICY,
        True,
        id="unpriced-model-is-free",
    ),
]


@pytest.mark.parametrize(("candidate", "requirements", "policy", "admitted"), ELIGIBILITY_CASES)
def test_eligible_filters(
    candidate: Candidate, requirements: TaskRequirements, policy: RoutingPolicy, admitted: bool
) -> None:
    assert eligible(requirements, [candidate], policy) == ([candidate] if admitted else [])


def test_eligible_keeps_the_given_order() -> None:
    candidates = [agent("c"), agent("busy", status="busy"), agent("a"), agent("b")]
    assert [c.agent_id for c in eligible(task(), candidates, DEFAULT_POLICY)] == ["c", "a", "b"]


# --- the strategies, called directly on already-eligible candidates -------------------------------------

CAPABILITY_BASED_CASES = [
    pytest.param(
        [agent("generalist", caps={"code", "web", "sql", "math"}), agent("specialist", caps={"code"})],
        DEFAULT_POLICY,
        "specialist",
        id="specialist-beats-generalist",
    ),
    pytest.param(
        [agent("a", success_rate=0.5), agent("b", success_rate=0.9)],
        DEFAULT_POLICY,
        "b",
        id="higher-success-rate",
    ),
    pytest.param([agent("a", active=3), agent("b", active=1)], DEFAULT_POLICY, "b", id="lower-load"),
    pytest.param(
        [agent("a", model="gpt-4"), agent("b", model="claude-3-haiku")],
        RoutingPolicy(prices=PRICES, weights=Weights(capability=0.0, performance=0.0, load=0.0, cost=1.0)),
        "b",
        id="cheaper-model",
    ),
    pytest.param(
        [agent("a", active=2), agent("b", active=1)],
        RoutingPolicy(weights=Weights(capability=1.0, performance=0.0, load=0.0, cost=0.0)),
        "b",
        id="tie-on-score-goes-to-lower-load",
    ),
    pytest.param(
        [agent("b"), agent("c"), agent("a")], DEFAULT_POLICY, "a", id="full-tie-goes-to-smallest-id"
    ),
    # The weights decide between a busy specialist and an idle generalist.
    pytest.param(
        [
            agent("specialist", caps={"code"}, active=3),
            agent("generalist", caps={"code", "web", "sql", "math"}),
        ],
        DEFAULT_POLICY,
        "specialist",
        id="default-weights-pick-busy-specialist",
    ),
    pytest.param(
        [
            agent("specialist", caps={"code"}, active=3),
            agent("generalist", caps={"code", "web", "sql", "math"}),
        ],
        RoutingPolicy(weights=Weights(capability=0.1, performance=0.3, load=0.6, cost=0.0)),
        "generalist",
        id="load-heavy-weights-pick-idle-generalist",
    ),
]


@pytest.mark.parametrize(("candidates", "policy", "winner"), CAPABILITY_BASED_CASES)
def test_capability_based(candidates: list[Candidate], policy: RoutingPolicy, winner: str) -> None:
    decision = capability_based(task(), candidates, policy)
    assert decision is not None
    assert decision.agent_id == winner


def test_capability_based_reports_score_and_cost() -> None:
    decision = capability_based(task(), [agent("a", active=2)], DEFAULT_POLICY)
    # capability 1, success 1, load 0.5, cost 0.045 under the seed weights.
    expected_score = 0.4 + 0.3 + 0.5 * 0.2 + 0.1 / 1.045
    assert decision is not None
    assert decision.agent_id == "a"
    assert decision.score == pytest.approx(expected_score)
    assert decision.estimated_cost == pytest.approx(0.045)


ROUND_ROBIN_CASES = [
    pytest.param(["b", "c", "a"], None, "a", id="first-call-takes-smallest-id"),
    pytest.param(["a", "b", "c"], "a", "b", id="next-after-last"),
    pytest.param(["c", "a", "b"], "b", "c", id="input-order-irrelevant"),
    pytest.param(["a", "b", "c"], "c", "a", id="wraps-after-largest"),
    pytest.param(["a", "c"], "b", "c", id="last-agent-left-the-fleet"),
    pytest.param(["a", "b"], "z", "a", id="last-beyond-all-wraps"),
    pytest.param(["a"], "a", "a", id="single-agent-repeats"),
]


@pytest.mark.parametrize(("agent_ids", "last", "winner"), ROUND_ROBIN_CASES)
def test_round_robin(agent_ids: list[str], last: str | None, winner: str) -> None:
    decision = round_robin(task(), [agent(i) for i in agent_ids], DEFAULT_POLICY, last_agent_id=last)
    assert decision is not None
    assert decision.agent_id == winner
    assert decision.score == 0.0
    assert decision.estimated_cost == pytest.approx(0.045)


@pytest.mark.parametrize("agent_count", [pytest.param(3, id="3-agents"), pytest.param(7, id="7-agents")])
def test_round_robin_spreads_evenly_when_fed_back(agent_count: int) -> None:
    # Loads differ on purpose: round robin must ignore them.
    candidates = [agent(f"agent-{n}", active=n % 4) for n in range(agent_count)]
    policy = RoutingPolicy(strategy="round_robin")
    counts: Counter[str] = Counter()
    last: str | None = None
    for _ in range(100 * agent_count):
        decision = pick(task(), candidates, policy, last_agent_id=last)
        assert decision is not None
        counts[decision.agent_id] += 1
        last = decision.agent_id
    assert counts == {c.agent_id: 100 for c in candidates}


LEAST_LOADED_CASES = [
    pytest.param([agent("busy", active=3), agent("idle", active=0)], "idle", id="prefers-idle"),
    pytest.param(
        [agent("small", active=1, max_concurrency=2), agent("big", active=2, max_concurrency=10)],
        "big",
        id="ratio-not-count",
    ),
    pytest.param(
        [agent("a", active=1, max_concurrency=2), agent("b", active=4, max_concurrency=8)],
        "b",
        id="equal-ratio-more-spare-slots",
    ),
    pytest.param(
        [agent("a", max_concurrency=2), agent("b", max_concurrency=8)], "b", id="both-idle-more-spare-slots"
    ),
    pytest.param([agent("c", active=1), agent("b", active=1)], "b", id="full-tie-goes-to-smallest-id"),
]


@pytest.mark.parametrize(("candidates", "winner"), LEAST_LOADED_CASES)
def test_least_loaded(candidates: list[Candidate], winner: str) -> None:
    decision = least_loaded(task(), candidates, DEFAULT_POLICY)
    assert decision is not None
    assert decision.agent_id == winner


def test_least_loaded_score_is_the_free_share() -> None:
    decision = least_loaded(task(), [agent("a", active=1, max_concurrency=4)], DEFAULT_POLICY)
    assert decision is not None
    assert decision.agent_id == "a"
    assert decision.score == 0.75
    assert decision.estimated_cost == pytest.approx(0.045)


# --- pick(): filter, then the chosen strategy -----------------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_no_candidates_means_no_decision(strategy: str) -> None:
    policy = RoutingPolicy(strategy=strategy)
    assert pick(task(), [], policy) is None
    assert STRATEGIES[strategy](task(), [], policy) is None


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_no_eligible_candidate_means_no_decision(strategy: str) -> None:
    candidates = [agent("a", status="draining"), agent("b", caps={"web"}), agent("c", active=4)]
    assert pick(task(), candidates, RoutingPolicy(strategy=strategy)) is None


@pytest.mark.parametrize(
    ("policy_strategy", "task_strategy", "winner"),
    [
        pytest.param("capability_based", None, "specialist", id="policy-capability-based"),
        pytest.param("least_loaded", None, "idle", id="policy-least-loaded"),
        pytest.param("round_robin", None, "idle", id="policy-round-robin"),
        pytest.param("capability_based", "least_loaded", "idle", id="task-overrides-policy"),
        pytest.param("least_loaded", "capability_based", "specialist", id="task-overrides-other-way"),
    ],
)
def test_pick_applies_the_named_strategy(
    policy_strategy: str, task_strategy: str | None, winner: str
) -> None:
    candidates = [
        agent("specialist", caps={"code"}, active=2),
        agent("idle", caps={"code", "web", "sql", "math"}, active=0),
    ]
    policy = RoutingPolicy(strategy=policy_strategy, prices=PRICES)
    decision = pick(task(strategy=task_strategy), candidates, policy)
    assert decision is not None
    assert decision.agent_id == winner


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_pick_never_returns_an_ineligible_agent(strategy: str) -> None:
    # The draining agent would win every strategy on its own merits.
    candidates = [agent("a-draining", status="draining"), agent("b", active=3)]
    decision = pick(task(), candidates, RoutingPolicy(strategy=strategy))
    assert decision is not None
    assert decision.agent_id == "b"


@pytest.mark.parametrize(
    ("policy", "requirements"),
    [
        pytest.param(RoutingPolicy(strategy="random"), task(), id="policy"),
        pytest.param(RoutingPolicy(), task(strategy="random"), id="task-override"),
    ],
)
def test_unknown_strategy_is_refused_by_name(policy: RoutingPolicy, requirements: TaskRequirements) -> None:
    with pytest.raises(ValueError, match="'random'.*capability_based, least_loaded, round_robin"):
        pick(requirements, [agent("a")], policy)
    # Even with no fleet, so a typo surfaces at once.
    with pytest.raises(ValueError, match="random"):
        pick(requirements, [], policy)


def test_get_strategy_returns_the_registered_function() -> None:
    assert get_strategy("round_robin") is round_robin
