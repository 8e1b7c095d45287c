from __future__ import annotations

import json
from typing import Any

import pytest

from app.collab.strategies import STRATEGIES, consensus
from app.collab.strategies.base import Decision, FinishedSubtask, SessionSpec, SpecError
from app.collab.strategies.consensus import step, validate

AGENTS = ("a", "b", "c")


def make_spec(participants: tuple[str, ...] = AGENTS, **params: Any) -> SessionSpec:
    return SessionSpec(
        strategy="consensus",
        task_type="classify",
        capabilities=("judge",),
        payload={"question": "spam?"},
        params=params,
        participants=participants,
        consensus_threshold=0.8,
        consensus_max_rounds=5,
    )


def ok(key: str, output: Any) -> FinishedSubtask:
    return FinishedSubtask(key, "succeeded", output, None, key.split("-", 1)[1])


def bad(key: str, status: str = "failed") -> FinishedSubtask:
    return FinishedSubtask(key, status, None, {"code": "boom", "message": "no"}, key.split("-", 1)[1])


def answer_round(spec: SessionSpec, decision: Decision, outputs: dict[str, Any]) -> Decision:
    """Finish every subtask of the current round: agent -> output (or a FinishedSubtask for failures)."""
    finished = tuple(
        value if isinstance(value, FinishedSubtask) else ok(f"r{decision.round}-{agent}", value)
        for agent, value in outputs.items()
    )
    new = step(spec, decision.state, finished)
    json.dumps(new.state)
    return new


def test_registered() -> None:
    assert STRATEGIES["consensus"] is consensus


def test_round_one_asks_every_participant() -> None:
    decision = step(make_spec(), {}, ())
    assert decision.round == 1
    assert [(s.key, s.agent_ids) for s in decision.submit] == [
        ("r1-a", ("a",)),
        ("r1-b", ("b",)),
        ("r1-c", ("c",)),
    ]
    assert all(s.payload == {"question": "spam?"} for s in decision.submit)
    assert all((s.type, s.capabilities) == ("classify", ("judge",)) for s in decision.submit)


def test_all_agree() -> None:
    spec = make_spec()
    decision = answer_round(spec, step(spec, {}, ()), {"a": "spam", "b": "spam", "c": "spam"})
    assert decision.done
    assert decision.status == "succeeded"
    assert decision.result == {
        "answer": "spam",
        "share": 1.0,
        "votes": 3,
        "of": 3,
        "round": 1,
        "agents": ["a", "b", "c"],
    }
    assert decision.state["rounds"][0]["answers"][0] == {
        "agent_id": "a",
        "output": "spam",
        "status": "succeeded",
        "error": None,
    }


def test_waits_for_the_whole_round_and_counts_a_redelivery_once() -> None:
    spec = make_spec()
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (ok("r1-a", "spam"), ok("r1-a", "spam")))
    assert (decision.done, decision.submit, decision.round) == (False, (), 1)
    again = step(spec, decision.state, (ok("r1-a", "ham"), ok("r9-b", "spam"), ok("r1-zed", "spam")))
    assert again.state == decision.state
    decision = step(spec, again.state, (ok("r1-b", "spam"), ok("r1-c", "spam")))
    assert decision.result is not None
    assert decision.result["votes"] == 3


def test_two_of_three_pass_at_threshold_point_six() -> None:
    spec = make_spec(threshold=0.6)
    decision = answer_round(spec, step(spec, {}, ()), {"a": "ham", "b": "spam", "c": "spam"})
    assert decision.status == "succeeded"
    assert decision.result["answer"] == "spam"
    assert decision.result["share"] == pytest.approx(2 / 3)
    assert (decision.result["votes"], decision.result["of"]) == (2, 3)
    assert decision.result["agents"] == ["b", "c"]


@pytest.mark.parametrize(
    ("agreeing", "of", "threshold"), [(4, 5, 0.8), (3, 5, 0.6), (3, 10, 0.3), (1, 2, 0.5)]
)
def test_a_threshold_exactly_met_passes(agreeing: int, of: int, threshold: float) -> None:
    agents = tuple(f"g{i}" for i in range(of))
    spec = make_spec(agents, threshold=threshold)
    outputs = {agent: ("yes" if i < agreeing else f"no-{i}") for i, agent in enumerate(agents)}
    decision = answer_round(spec, step(spec, {}, ()), outputs)
    assert decision.status == "succeeded"
    assert decision.result["votes"] == agreeing


def test_below_threshold_starts_a_round_carrying_the_proposals() -> None:
    spec = make_spec()
    decision = answer_round(spec, step(spec, {}, ()), {"c": "ham", "a": "spam", "b": bad("r1-b")})
    assert not decision.done
    assert decision.round == 2
    assert [s.key for s in decision.submit] == ["r2-a", "r2-b", "r2-c"]
    assert decision.submit[1].payload == {
        "question": "spam?",
        "round": 2,
        "proposals": [{"agent_id": "a", "output": "spam"}, {"agent_id": "c", "output": "ham"}],
    }
    # A round-1 result arriving again during round 2 changes nothing.
    assert step(spec, decision.state, (ok("r1-a", "ham"),)).state == decision.state


def test_never_agreeing_fails_after_max_rounds_with_every_round_kept() -> None:
    spec = make_spec(max_rounds=3)
    decision = step(spec, {}, ())
    for round_number in (1, 2, 3):
        assert decision.round == round_number
        decision = answer_round(spec, decision, {"a": f"x{round_number}", "b": "y", "c": {"z": round_number}})
    assert decision.done
    assert decision.status == "failed"
    assert decision.submit == ()
    assert decision.round == 3
    assert decision.error is not None
    assert decision.error["code"] == "no_consensus"
    assert "3 round" in decision.error["message"]
    rounds = decision.error["rounds"]
    assert [entry["round"] for entry in rounds] == [1, 2, 3]
    assert rounds[2]["answers"][2]["output"] == {"z": 3}
    assert decision.state["rounds"] == rounds
    assert step(spec, decision.state, (ok("r3-a", "y"),)) == decision


def test_a_round_where_everyone_failed_has_no_consensus() -> None:
    spec = make_spec(max_rounds=2)
    decision = answer_round(spec, step(spec, {}, ()), {agent: bad(f"r1-{agent}") for agent in AGENTS})
    assert decision.round == 2
    assert decision.submit[0].payload["proposals"] == []
    decision = answer_round(spec, decision, {agent: bad(f"r2-{agent}", "timed_out") for agent in AGENTS})
    assert decision.error is not None
    assert decision.error["code"] == "no_consensus"
    assert decision.error["rounds"][1]["answers"][0]["status"] == "timed_out"


def test_failed_answers_neither_vote_nor_dilute_the_share() -> None:
    spec = make_spec()
    decision = answer_round(spec, step(spec, {}, ()), {"a": "spam", "b": bad("r1-b"), "c": "spam"})
    assert decision.result == {
        "answer": "spam",
        "share": 1.0,
        "votes": 2,
        "of": 2,
        "round": 1,
        "agents": ["a", "c"],
    }


@pytest.mark.parametrize(
    ("outputs", "winner"),
    [
        ({"a": "X", "b": "X", "c": "Y", "d": "Y"}, "X"),
        ({"a": "Y", "b": "X", "c": "Y", "d": "X"}, "Y"),
        ({"d": "X", "c": "Y", "b": "Y", "a": "X"}, "X"),
    ],
)
def test_a_tie_goes_to_the_group_whose_first_member_comes_first(outputs: dict[str, str], winner: str) -> None:
    spec = make_spec(("a", "b", "c", "d"), threshold=0.5)
    decision = answer_round(spec, step(spec, {}, ()), outputs)
    assert decision.result["answer"] == winner


def test_params_key_compares_a_nested_value_and_answers_with_the_full_output() -> None:
    spec = make_spec(key="verdict.label", threshold=0.6)
    outputs = {
        "a": {"verdict": {"label": "ham"}, "why": "polite"},
        "b": {"verdict": {"label": "spam", "p": 0.9}, "why": "links"},
        "c": {"verdict": {"label": "spam", "p": 0.7}, "why": "caps"},
    }
    decision = answer_round(spec, step(spec, {}, ()), outputs)
    assert decision.result["answer"] == outputs["b"]
    assert decision.result["votes"] == 2


def test_answers_without_the_key_agree_with_nobody() -> None:
    spec = make_spec(key="label", threshold=0.6, max_rounds=1)
    decision = answer_round(spec, step(spec, {}, ()), {"a": {"label": "x"}, "b": {}, "c": "label"})
    assert decision.error is not None
    assert decision.error["code"] == "no_consensus"


def test_a_null_value_is_a_value() -> None:
    spec = make_spec(key="label", threshold=0.6)
    decision = answer_round(spec, step(spec, {}, ()), {"a": {"label": None}, "b": {"label": None}, "c": {}})
    assert decision.result["votes"] == 2


def test_agreement_ignores_key_order_and_int_vs_float() -> None:
    spec = make_spec()
    outputs = {"a": {"x": 1, "y": [1, 2]}, "b": {"y": [1.0, 2], "x": 1.0}, "c": {"x": 1, "y": [1, 2]}}
    decision = answer_round(spec, step(spec, {}, ()), outputs)
    assert decision.result["votes"] == 3
    assert decision.result["answer"] == {"x": 1, "y": [1, 2]}


def test_defaults_come_from_the_spec() -> None:
    spec = SessionSpec(
        "consensus", "t", (), {}, {}, ("a", "b"), consensus_threshold=0.5, consensus_max_rounds=1
    )
    decision = answer_round(spec, step(spec, {}, ()), {"a": 1, "b": 2})
    assert decision.status == "succeeded"
    assert decision.result["share"] == 0.5
    spec = SessionSpec(
        "consensus", "t", (), {}, {}, ("a", "b"), consensus_threshold=0.9, consensus_max_rounds=1
    )
    decision = answer_round(spec, step(spec, {}, ()), {"a": 1, "b": 2})
    assert decision.status == "failed"


def test_one_participant_agrees_with_itself() -> None:
    spec = make_spec(("solo",))
    decision = answer_round(spec, step(spec, {}, ()), {"solo": 42})
    assert decision.result["answer"] == 42


@pytest.mark.parametrize(
    ("participants", "params", "fragment"),
    [
        ((), {}, "participants"),
        (("a", "a"), {}, "participants"),
        (AGENTS, {"threshold": 0}, "params.threshold"),
        (AGENTS, {"threshold": 1.5}, "params.threshold"),
        (AGENTS, {"threshold": "high"}, "params.threshold"),
        (AGENTS, {"threshold": True}, "params.threshold"),
        (AGENTS, {"max_rounds": 0}, "params.max_rounds"),
        (AGENTS, {"max_rounds": 2.5}, "params.max_rounds"),
        (AGENTS, {"key": ""}, "params.key"),
        (AGENTS, {"key": 5}, "params.key"),
        (AGENTS, {"rounds": 3}, "rounds"),
    ],
)
def test_validate_names_the_bad_param(
    participants: tuple[str, ...], params: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SpecError, match=fragment.replace(".", r"\.")):
        validate(make_spec(participants, **params))


def test_validate_accepts_a_good_spec() -> None:
    validate(make_spec(key="a.b", threshold=1, max_rounds=1))
