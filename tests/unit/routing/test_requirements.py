"""Task types, minimum capability versions and fallback models: what routing admits, in pick() and in the
batch router alike."""

from __future__ import annotations

import pytest

from app.routing.batch import route_batch
from app.routing.strategies import (
    Candidate,
    RoutingPolicy,
    TaskRequirements,
    eligible,
    model_for_attempt,
    pick,
    version_at_least,
)

POLICY = RoutingPolicy()


def agent(
    agent_id: str,
    *,
    model: str = "gpt-4",
    task_types: frozenset[str] | None = None,
    versions: dict[str, str] | None = None,
) -> Candidate:
    return Candidate(
        agent_id=agent_id,
        model=model,
        capabilities=frozenset({"code"}),
        max_concurrency=2,
        active=0,
        task_types=task_types,
        versions=versions or {},
    )


def task(
    task_type: str = "review", *, model: str | None = None, min_versions: tuple[tuple[str, str], ...] = ()
) -> TaskRequirements:
    return TaskRequirements(
        required_capabilities=frozenset({"code"}), task_type=task_type, model=model, min_versions=min_versions
    )


def test_an_agent_that_names_its_types_is_offered_only_those() -> None:
    reviewer = agent("reviewer", task_types=frozenset({"review"}))
    generator = agent("generator", task_types=frozenset({"generate"}))
    anything = agent("anything")  # no task_types: any type
    fleet = [reviewer, generator, anything]
    assert [c.agent_id for c in eligible(task("review"), fleet, POLICY)] == ["reviewer", "anything"]
    assert [c.agent_id for c in eligible(task("translate"), fleet, POLICY)] == ["anything"]
    assert pick(task("translate"), [reviewer, generator], POLICY) is None
    decisions, _ = route_batch([task("generate"), task("translate")], [reviewer, generator], POLICY)
    assert [d.agent_id if d else None for d in decisions] == ["generator", None]


@pytest.mark.parametrize(
    ("declared", "minimum", "meets"),
    [
        ("1.2", "1.2", True),
        ("1.10", "1.2", True),  # numbers, not text: 10 > 2
        ("1.2.0", "1.2", True),
        ("v2", "1.9.9", True),
        ("1.1.9", "1.2", False),
        ("", "1.0", False),  # no version declared meets no minimum
        ("latest", "1.0", False),
    ],
)
def test_versions_compare_as_dotted_numbers(declared: str, minimum: str, meets: bool) -> None:
    assert version_at_least(declared, minimum) is meets


def test_a_minimum_version_admits_only_agents_declaring_that_version_or_later() -> None:
    old = agent("old", versions={"code": "1.1"})
    new = agent("new", versions={"code": "1.3.1"})
    silent = agent("silent")
    wanted = task(min_versions=(("code", "1.2"),))
    assert [c.agent_id for c in eligible(wanted, [old, new, silent], POLICY)] == ["new"]
    decisions, _ = route_batch([wanted, task()], [old, silent], POLICY)
    assert decisions[0] is None
    assert decisions[1] is not None


def test_fallback_models_come_in_order_after_the_first_has_failed_enough() -> None:
    fallbacks = ["claude-3-haiku", "titan-v2"]
    assert [model_for_attempt("gpt-4", fallbacks, attempts, 2) for attempts in range(6)] == [
        "gpt-4", "gpt-4", "claude-3-haiku", "titan-v2", "titan-v2", "titan-v2",
    ]  # fmt: skip
    assert model_for_attempt("gpt-4", None, 5, 1) == "gpt-4"
    assert model_for_attempt(None, None, 0, 1) is None
    fleet = [agent("a", model="gpt-4"), agent("b", model="claude-3-haiku")]
    second = task(model=model_for_attempt("gpt-4", fallbacks, 1, 1))
    decision = pick(second, fleet, POLICY)
    assert decision is not None
    assert decision.agent_id == "b"
