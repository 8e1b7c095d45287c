"""route_batch() must decide exactly as repeated pick() calls do; random fleets and task mixes check it."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from app.routing.batch import FitCache, route_batch
from app.routing.scoring import Price, Weights
from app.routing.strategies import Candidate, Decision, RoutingPolicy, TaskRequirements, pick

CAPS = ["a", "b", "c", "d"]
MODELS = ["gpt-4", "claude-3-opus", "local"]


def sequential(
    tasks: list[TaskRequirements], candidates: list[Candidate], policy: RoutingPolicy, last: str | None
) -> tuple[list[Decision | None], str | None]:
    fleet = {c.agent_id: c for c in candidates}
    decisions: list[Decision | None] = []
    for task in tasks:
        decision = pick(task, list(fleet.values()), policy, last_agent_id=last)
        if decision is not None:
            chosen = fleet[decision.agent_id]
            fleet[decision.agent_id] = replace(chosen, active=chosen.active + 1)
            last = decision.agent_id
        decisions.append(decision)
    return decisions, last


def random_fleet(rng: random.Random, size: int) -> list[Candidate]:
    return [
        Candidate(
            agent_id=f"agent-{rng.randrange(1000):03d}-{index}",
            model=rng.choice(MODELS),
            capabilities=frozenset(rng.sample(CAPS, rng.randint(1, len(CAPS)))),
            max_concurrency=rng.randint(1, 4),
            active=rng.randint(0, 2),
            success_rate=rng.choice([1.0, 0.5, 0.9, 0.75]),
            status=rng.choice(["active"] * 6 + ["draining", "unhealthy"]),
        )
        for index in range(size)
    ]


def random_task(rng: random.Random, fleet: list[Candidate]) -> TaskRequirements:
    return TaskRequirements(
        required_capabilities=frozenset(rng.sample(CAPS, rng.randint(1, 2))),
        model=rng.choice([None, None, *MODELS]),
        max_cost=rng.choice([None, None, 0.05, 0.001]),
        estimated_tokens=rng.choice([100, 1000, 3000]),
        agent_ids=rng.choice(
            [None, None, frozenset(c.agent_id for c in rng.sample(fleet, min(3, len(fleet))))]
        ),
        strategy=rng.choice([None, "capability_based", "round_robin", "least_loaded"]),
    )


@pytest.mark.parametrize("seed", range(60))
def test_the_batch_decides_as_pick_does(seed: int) -> None:
    rng = random.Random(seed)
    fleet = random_fleet(rng, rng.randint(0, 25))
    kinds = [random_task(rng, fleet) for _ in range(rng.randint(1, 5))]
    tasks = [rng.choice(kinds) for _ in range(rng.randint(1, 60))]
    policy = RoutingPolicy(
        strategy=rng.choice(["capability_based", "round_robin", "least_loaded"]),
        weights=rng.choice([Weights(), Weights(0.1, 0.1, 0.7, 0.1), Weights(0.25, 0.25, 0.25, 0.25)]),
        allowed_models=rng.choice([frozenset(), frozenset({"gpt-4", "local"})]),
        cost_limit_per_task=rng.choice([None, 0.1]),
        prices={"gpt-4": Price(0.03, 0.06), "claude-3-opus": Price(0.015, 0.075)},
    )
    last = rng.choice([None, "agent-500"])
    assert route_batch(tasks, fleet, policy, last_agent_id=last) == sequential(tasks, fleet, policy, last)


def test_an_unknown_strategy_fails_as_in_pick() -> None:
    with pytest.raises(ValueError, match="unknown routing strategy"):
        route_batch([TaskRequirements(frozenset({"a"}), strategy="random")], [], RoutingPolicy())


def test_slots_fill_up_across_the_batch() -> None:
    fleet = [Candidate("solo", "gpt-4", frozenset({"a"}), max_concurrency=2, active=0)]
    task = TaskRequirements(frozenset({"a"}))
    decisions, last = route_batch([task] * 3, fleet, RoutingPolicy())
    assert [d.agent_id if d else None for d in decisions] == ["solo", "solo", None]
    assert last == "solo"


def test_rank_is_the_weighted_score_bit_for_bit() -> None:
    """pick() and route_batch() share strategies.rank; it must be the seed's formula, not an approximation."""
    from app.routing.scoring import capability_score, load_ratio, weighted_score
    from app.routing.strategies import fit, rank

    rng = random.Random(7)
    policy = RoutingPolicy(prices={"gpt-4": Price(0.03, 0.06)}, weights=Weights(0.37, 0.29, 0.21, 0.13))
    for candidate in random_fleet(rng, 200):
        task = random_task(rng, [candidate])
        agent = fit(task, candidate, policy)
        key = rank("capability_based", agent, candidate.active, candidate.max_concurrency, policy.weights)
        expected = weighted_score(
            capability=capability_score(task.required_capabilities, candidate.capabilities),
            success_rate=candidate.success_rate,
            load=load_ratio(candidate.active, candidate.max_concurrency),
            cost=agent.cost,
            weights=policy.weights,
        )
        assert -key[0] == expected


@pytest.mark.parametrize("seed", range(30))
def test_remembered_fits_decide_as_fresh_ones_while_the_fleet_changes(seed: int) -> None:
    rng = random.Random(seed)
    policy = RoutingPolicy(
        strategy=rng.choice(["capability_based", "round_robin", "least_loaded"]),
        prices={"gpt-4": Price(0.03, 0.06), "claude-3-opus": Price(0.015, 0.075)},
        cost_limit_per_task=rng.choice([None, 0.1]),
    )
    fleet = random_fleet(rng, rng.randint(1, 25))
    kinds = [random_task(rng, fleet) for _ in range(3)]
    fits = FitCache()
    for _ in range(40):
        # Between calls agents change what a fit depends on (success rate, model, capabilities), load, or
        # leave; the cache must never answer with a stale fit.
        index = rng.randrange(len(fleet))
        fleet[index] = replace(
            fleet[index],
            success_rate=rng.choice([fleet[index].success_rate, 0.5, 0.8]),
            model=rng.choice([fleet[index].model, *MODELS]),
            capabilities=rng.choice([fleet[index].capabilities, frozenset(rng.sample(CAPS, 2))]),
            active=rng.randint(0, 3),
        )
        present = [c for c in fleet if rng.random() > 0.1]
        tasks = [rng.choice(kinds) for _ in range(rng.randint(1, 4))]
        assert route_batch(tasks, present, policy, fits=fits) == route_batch(tasks, present, policy)


def test_the_fit_cache_is_bounded_in_entries_whatever_the_kinds() -> None:
    fleet = [Candidate(f"agent-{i}", "local", frozenset({"a"}), 4, 0) for i in range(50)]
    fits = FitCache()
    fits.MAX_ENTRIES = 120
    policy = RoutingPolicy()
    for tokens in range(40):  # a client may send any estimated_tokens: a new kind each
        task = TaskRequirements(frozenset({"a"}), estimated_tokens=tokens)
        assert route_batch([task], fleet, policy, fits=fits) == route_batch([task], fleet, policy)
        assert fits._entries <= 120
        assert sum(len(kind) for kind in fits._kinds.values()) == fits._entries
    assert fits._entries > 0  # it kept remembering: cleared when full, not disabled
