from __future__ import annotations

import pytest

from app.routing.scoring import (
    Price,
    Weights,
    capability_score,
    cost_of_usage,
    estimate_cost,
    load_ratio,
    weighted_score,
)

GPT4 = Price(input_per_1k=0.03, output_per_1k=0.06)
FREE = Price(input_per_1k=0.0, output_per_1k=0.0)


def test_default_weights_are_the_seed() -> None:
    assert Weights() == Weights(capability=0.4, performance=0.3, load=0.2, cost=0.1)


@pytest.mark.parametrize(
    ("tokens", "price", "expected"),
    [
        pytest.param(1000, None, 0.0, id="no-price-is-free"),
        pytest.param(1000, GPT4, 0.5 * 0.03 + 0.5 * 0.06, id="split-evenly"),
        pytest.param(2000, GPT4, 0.03 + 0.06, id="scales-with-tokens"),
        pytest.param(0, GPT4, 0.0, id="no-tokens"),
        pytest.param(1000, FREE, 0.0, id="zero-price"),
        pytest.param(-500, GPT4, 0.0, id="negative-tokens-cost-nothing"),
        pytest.param(3000, Price(0.0002, 0.0002), 0.0006, id="titan-float-noise"),
    ],
)
def test_estimate_cost(tokens: int, price: Price | None, expected: float) -> None:
    assert estimate_cost(tokens, price) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "price", "expected"),
    [
        pytest.param(1000, 500, None, 0.0, id="no-price-is-free"),
        pytest.param(1000, 0, GPT4, 0.03, id="input-only"),
        pytest.param(0, 1000, GPT4, 0.06, id="output-only"),
        pytest.param(2000, 500, GPT4, 0.06 + 0.03, id="both"),
        pytest.param(-10, 1000, GPT4, 0.06, id="negative-counts-as-zero"),
    ],
)
def test_cost_of_usage(input_tokens: int, output_tokens: int, price: Price | None, expected: float) -> None:
    assert cost_of_usage(input_tokens, output_tokens, price) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("required", "offered", "expected"),
    [
        pytest.param({"code"}, {"code"}, 1.0, id="exact-specialist"),
        pytest.param({"code"}, {"code", "web", "sql", "math"}, 0.25, id="generalist-scores-lower"),
        pytest.param({"code", "sql"}, {"code", "sql", "web", "math"}, 0.5, id="half-used"),
        pytest.param({"code", "sql"}, {"code", "web"}, 0.0, id="one-missing"),
        pytest.param({"code"}, set(), 0.0, id="offers-nothing"),
        pytest.param(set(), {"code", "web"}, 1.0, id="nothing-required"),
        pytest.param(set(), set(), 1.0, id="nothing-required-nothing-offered"),
    ],
)
def test_capability_score(required: set[str], offered: set[str], expected: float) -> None:
    assert capability_score(frozenset(required), frozenset(offered)) == expected


@pytest.mark.parametrize(
    ("active", "max_concurrency", "expected"),
    [
        pytest.param(0, 4, 0.0, id="idle"),
        pytest.param(1, 4, 0.25, id="quarter"),
        pytest.param(4, 4, 1.0, id="full"),
        pytest.param(6, 4, 1.0, id="over-full-clamped"),
        pytest.param(-1, 4, 0.0, id="negative-clamped"),
        pytest.param(0, 0, 1.0, id="no-slots-counts-as-full"),
    ],
)
def test_load_ratio(active: int, max_concurrency: int, expected: float) -> None:
    assert load_ratio(active, max_concurrency) == expected


@pytest.mark.parametrize(
    ("capability", "success_rate", "load", "cost", "weights", "expected"),
    [
        pytest.param(1.0, 1.0, 0.0, 0.0, Weights(), 1.0, id="perfect-agent"),
        pytest.param(0.0, 0.0, 1.0, 0.0, Weights(), 0.1, id="only-free-cost-counts"),
        pytest.param(1.0, 1.0, 0.0, 1.0, Weights(), 0.95, id="cost-one-halves-cost-term"),
        pytest.param(0.5, 0.8, 0.25, 0.0, Weights(), 0.2 + 0.24 + 0.15 + 0.1, id="seed-formula"),
        pytest.param(1.0, 0.0, 1.0, 9.0, Weights(1.0, 0.0, 0.0, 0.0), 1.0, id="capability-only-weights"),
        pytest.param(1.0, 1.0, 0.0, -5.0, Weights(), 1.0, id="negative-cost-treated-as-free"),
    ],
)
def test_weighted_score(
    capability: float, success_rate: float, load: float, cost: float, weights: Weights, expected: float
) -> None:
    score = weighted_score(
        capability=capability, success_rate=success_rate, load=load, cost=cost, weights=weights
    )
    assert score == pytest.approx(expected)
