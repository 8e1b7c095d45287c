from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.collab.participants import AgentView, ParticipantError, check_steps, required_capabilities, resolve
from app.collab.schemas import Participants, SessionCreate
from app.collab.service import spec_error_field
from app.routing.strategies import RoutingPolicy

ROUND_ROBIN = RoutingPolicy(strategy="round_robin")


def agent(agent_id: str, *caps: str, status: str = "active", active: int = 0, model: str = "m") -> AgentView:
    return AgentView(
        id=agent_id,
        model=model,
        status=status,
        capabilities=frozenset(caps or ("text",)),
        max_concurrency=2,
        active=active,
    )


def run(
    request: dict[str, Any] | None,
    agents: list[AgentView],
    *,
    strategy: str = "map_reduce",
    task_caps: tuple[str, ...] = ("text",),
    policy: RoutingPolicy = ROUND_ROBIN,
) -> tuple[str, ...]:
    return resolve(
        strategy=strategy,
        request=Participants.model_validate(request) if request is not None else None,
        task_capabilities=task_caps,
        agents=agents,
        policy=policy,
        estimated_tokens=1000,
    )


def test_no_participants_means_any_capable_agent() -> None:
    assert run(None, [agent("a")]) == ()


def test_by_capabilities_takes_every_routable_agent_in_id_order() -> None:
    agents = [
        agent("c"),
        agent("a"),
        agent("b", status="offline"),
        agent("d", status="draining"),
        agent("e", status="unhealthy"),
        agent("f", "other"),
    ]
    assert run({"capabilities": ["text"]}, agents) == ("a", "c")


def test_a_participant_needs_the_task_capabilities_too_except_in_a_chain() -> None:
    agents = [agent("a", "vote"), agent("b", "vote", "text")]
    assert run({"capabilities": ["vote"]}, agents) == ("b",)
    assert run({"capabilities": ["vote"]}, agents, strategy="chain") == ("a", "b")
    assert required_capabilities("consensus", Participants(capabilities=["vote"]), ["text", "vote"]) == [
        "vote",
        "text",
    ]


def test_an_agent_with_every_slot_taken_still_qualifies() -> None:
    assert run({"capabilities": ["text"]}, [agent("a", active=2), agent("b", active=5)]) == ("a", "b")


def test_count_is_chosen_by_the_routing_strategy_without_repeats() -> None:
    agents = [agent(name) for name in "dcba"]
    assert run({"capabilities": ["text"], "count": 3}, agents) == ("a", "b", "c")
    least = RoutingPolicy(strategy="least_loaded")
    loaded = [agent("a", active=1), agent("b"), agent("c", active=1), agent("d")]
    assert run({"capabilities": ["text"], "count": 2}, loaded, policy=least) == ("b", "d")
    chosen = run({"capabilities": ["text"], "count": 4}, agents, policy=RoutingPolicy())
    assert sorted(chosen) == ["a", "b", "c", "d"]


def test_models_the_operator_disallows_are_not_participants() -> None:
    policy = RoutingPolicy(strategy="round_robin", allowed_models=frozenset({"good"}))
    agents = [agent("a", model="bad"), agent("b", model="good")]
    assert run({"capabilities": ["text"]}, agents, policy=policy) == ("b",)


def test_too_few_names_the_shortfall() -> None:
    agents = [agent("a", "vote", "rare"), agent("b", "vote", "rare"), agent("c", "vote")]
    with pytest.raises(ParticipantError) as caught:
        run({"capabilities": ["rare"], "count": 3}, agents, strategy="consensus", task_caps=("vote",))
    assert str(caught.value) == "consensus needs 3 participants with [rare, vote]; 2 are connected"
    assert caught.value.field == "participants"
    with pytest.raises(
        ParticipantError, match=r"^map_reduce needs 1 participant with \[text\]; 0 are connected$"
    ):
        run({"capabilities": ["text"]}, [agent("a", status="offline")])
    with pytest.raises(ParticipantError, match="needs 2 participants with .*; 1 is connected"):
        run({"capabilities": ["text"], "count": 2}, [agent("a")])


def test_named_agents_keep_their_order_and_may_be_busy_or_draining() -> None:
    agents = [agent("a"), agent("b", status="draining"), agent("c", active=2)]
    assert run({"agent_ids": ["c", "a", "b"]}, agents) == ("c", "a", "b")


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ([agent("a")], "unknown agents: x, y"),
        ([agent("a"), agent("x", status="offline"), agent("y")], "agents not connected: x"),
        (
            [agent("a"), agent("x", "vote"), agent("y")],
            "every participant needs [text]: x lacks [text]",
        ),
    ],
)
def test_named_agents_must_exist_be_connected_and_capable(agents: list[AgentView], message: str) -> None:
    with pytest.raises(ParticipantError) as caught:
        run({"agent_ids": ["a", "x", "y"]}, agents)
    assert str(caught.value) == message
    assert caught.value.field == "participants.agent_ids"


def test_every_chain_step_needs_a_participant_offering_its_capability() -> None:
    params = {"steps": [{"name": "write", "capability": "gen"}, {"name": "check", "capability": "review"}]}
    agents = [agent("a", "gen"), agent("b", "gen")]
    with pytest.raises(ParticipantError) as caught:
        check_steps(params, ("a", "b"), agents)
    assert caught.value.field == "params.steps[1].capability"
    assert "'check' needs capability 'review'" in str(caught.value)
    check_steps(params, ("a", "b"), [agent("a", "gen"), agent("b", "review")])
    check_steps(params, (), [])  # no participants: any capable agent may take each step


def test_participants_schema_wants_exactly_one_way() -> None:
    for bad in ({}, {"capabilities": ["a"], "agent_ids": ["x"]}, {"agent_ids": ["x"], "count": 1}):
        with pytest.raises(ValidationError):
            Participants.model_validate(bad)
    assert Participants(agent_ids=["x", "y", "x"]).agent_ids == ["x", "y"]
    with pytest.raises(ValidationError):
        SessionCreate.model_validate({"strategy": "chain", "task": {"type": "t"}, "extra": 1})


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("params.chunk_size must be an integer, got 'x'", "params.chunk_size"),
        ("params: unknown foo (allowed: a, b)", "params"),
        ("params.steps[0].input: '$steps.b.output' names step 'b'", "params.steps[0].input"),
        ("payload.lines is missing (named by params.split_field)", "task.payload.lines"),
        ("participants: consensus needs at least one agent", "participants"),
        ("bad path '$x'", "params"),
    ],
)
def test_a_spec_error_names_the_request_field(message: str, field: str) -> None:
    assert spec_error_field(message) == field
