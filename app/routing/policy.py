"""The routing policy in force, from the settings (the one place that translates config to routing)."""

from __future__ import annotations

from app.config import Settings
from app.routing.scoring import Price, Weights
from app.routing.strategies import RoutingPolicy


def policy_from_settings(settings: Settings) -> RoutingPolicy:
    return RoutingPolicy(
        strategy=settings.routing_strategy,
        weights=Weights(**settings.routing_weights),
        allowed_models=frozenset(settings.allowed_models),
        cost_limit_per_task=settings.cost_limit_per_task,
        prices={m: Price(p["input_per_1k"], p["output_per_1k"]) for m, p in settings.model_prices.items()},
    )


def price_table(settings: Settings) -> dict[str, Price]:
    return {m: Price(p["input_per_1k"], p["output_per_1k"]) for m, p in settings.model_prices.items()}
