from __future__ import annotations

import json
from typing import Any

import pytest

from app.collab.strategies import STRATEGIES, SpecError, chain, get_strategy
from app.collab.strategies.base import Decision, FinishedSubtask, SessionSpec
from app.collab.strategies.chain import step, validate

PAYLOAD = {"doc": {"url": "https://x", "tags": ["a", "b"]}, "lang": "en"}
STEPS: list[dict[str, Any]] = [
    {"name": "extract", "capability": "extraction"},
    {
        "name": "summarise",
        "capability": "summarisation",
        "type": "summary",
        "input": {
            "text": "$steps.extract.output.text",
            "lang": "$input.lang",
            "first_tag": "$input.doc.tags.0",
            "all": ["$steps.extract.output", "literal", 3, None],
            "price": "$$5",
        },
    },
    {"name": "review", "capability": "review"},
]


def make_spec(steps: Any = STEPS, participants: tuple[str, ...] = ("p1",), **params: Any) -> SessionSpec:
    return SessionSpec(
        strategy="chain",
        task_type="work",
        capabilities=("unused",),
        payload=PAYLOAD,
        params={"steps": steps, **params},
        participants=participants,
    )


def ok(key: str, output: Any) -> FinishedSubtask:
    return FinishedSubtask(key, "succeeded", output, None, "p1")


def advance(spec: SessionSpec, decision: Decision, *finished: FinishedSubtask) -> Decision:
    new = step(spec, decision.state, finished)
    json.dumps(new.state)
    return new


def test_registered() -> None:
    assert STRATEGIES["chain"] is chain
    assert get_strategy("chain") is chain
    with pytest.raises(SpecError, match="strategy"):
        get_strategy("debate")


def test_outputs_flow_through_the_templates_to_the_result() -> None:
    spec = make_spec()
    decision = step(spec, {}, ())
    (first,) = decision.submit
    assert (first.key, first.type, first.capabilities, first.agent_ids) == (
        "step-extract",
        "work",
        ("extraction",),
        ("p1",),
    )
    assert first.payload == PAYLOAD
    assert decision.round == 0

    extracted = {"text": "hello world", "n": 2}
    decision = advance(spec, decision, ok("step-extract", extracted))
    (second,) = decision.submit
    assert (second.key, second.type, second.capabilities) == ("step-summarise", "summary", ("summarisation",))
    assert second.payload == {
        "text": "hello world",
        "lang": "en",
        "first_tag": "a",
        "all": [extracted, "literal", 3, None],
        "price": "$5",
    }
    assert decision.round == 1

    decision = advance(spec, decision, ok("step-summarise", {"summary": "hi"}))
    (third,) = decision.submit
    assert third.payload == {"input": PAYLOAD, "previous": {"summary": "hi"}}
    assert decision.round == 2

    decision = advance(spec, decision, ok("step-review", {"approved": True}))
    assert (decision.done, decision.status, decision.result, decision.round) == (
        True,
        "succeeded",
        {"approved": True},
        2,
    )
    assert decision.submit == ()


def test_a_whole_output_can_be_the_next_input() -> None:
    steps = [
        {"name": "a", "capability": "x"},
        {"name": "b", "capability": "y", "input": "$steps.a.output"},
        {"name": "c", "capability": "z", "input": "$input.doc"},
    ]
    spec = make_spec(steps, participants=())
    decision = advance(spec, step(spec, {}, ()), ok("step-a", {"k": [1, 2]}))
    assert decision.submit[0].payload == {"k": [1, 2]}
    assert decision.submit[0].agent_ids is None
    decision = advance(spec, decision, ok("step-b", "anything"))
    assert decision.submit[0].payload == PAYLOAD["doc"]


def test_a_missing_path_fails_naming_the_path_and_the_step() -> None:
    spec = make_spec()
    decision = advance(spec, step(spec, {}, ()), ok("step-extract", {"body": "no text key"}))
    assert decision.done
    assert decision.status == "failed"
    assert decision.submit == ()
    assert decision.error is not None
    assert decision.error["code"] == "template_error"
    assert decision.error["step"] == "summarise"
    assert decision.error["path"] == "$steps.extract.output.text"
    assert "$steps.extract.output.text" in decision.error["message"]
    assert "summarise" in decision.error["message"]


@pytest.mark.parametrize("path", ["$input.nope", "$input.doc.tags.7", "$input.lang.x", "$input.doc.tags.-1"])
def test_missing_input_paths(path: str) -> None:
    spec = make_spec([{"name": "only", "capability": "x", "input": {"v": path}}])
    decision = step(spec, {}, ())
    assert decision.error is not None
    assert (decision.error["code"], decision.error["path"]) == ("template_error", path)


def test_an_input_that_renders_to_a_non_object_fails() -> None:
    spec = make_spec(
        [{"name": "a", "capability": "x"}, {"name": "b", "capability": "y", "input": "$steps.a.output"}]
    )
    decision = advance(spec, step(spec, {}, ()), ok("step-a", ["a", "list"]))
    assert decision.error is not None
    assert decision.error["code"] == "template_error"
    assert "not an object" in decision.error["message"]


@pytest.mark.parametrize("status", ["failed", "cancelled", "timed_out"])
def test_a_failed_step_fails_the_session_naming_the_step(status: str) -> None:
    spec = make_spec()
    decision = advance(spec, step(spec, {}, ()), ok("step-extract", {"text": "t"}))
    failed = FinishedSubtask(
        "step-summarise", status, None, {"code": "oops", "message": "model refused"}, "p1"
    )
    decision = advance(spec, decision, failed)
    assert decision.status == "failed"
    assert decision.submit == ()
    assert decision.round == 1
    assert decision.error is not None
    assert decision.error["code"] == "step_failed"
    assert decision.error["step"] == "summarise"
    assert decision.error["message"] == f"step-summarise {status}: model refused"
    assert advance(spec, decision, ok("step-summarise", {})) == decision


def test_redeliveries_and_strangers_change_nothing() -> None:
    spec = make_spec()
    decision = advance(spec, step(spec, {}, ()), ok("step-extract", {"text": "t"}))
    for noise in [(), (ok("step-extract", {"text": "other"}),), (ok("step-review", {}),), (ok("map-0", 1),)]:
        again = advance(spec, decision, *noise)
        assert again.state == decision.state
        assert again.submit == ()
        assert not again.done
    assert decision.state["outputs"] == {"extract": {"text": "t"}}


def test_step_never_mutates_the_state_it_is_given() -> None:
    spec = make_spec()
    first = step(spec, {}, ())
    snapshot = json.loads(json.dumps(first.state))
    advance(spec, first, ok("step-extract", {"text": "t"}))
    assert first.state == snapshot


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        (None, "params.steps"),
        ([], "params.steps"),
        ("extract", "params.steps"),
        (["extract"], r"params.steps\[0\]"),
        ([{"capability": "x"}], r"params.steps\[0\].name is required"),
        ([{"name": "a"}], r"params.steps\[0\].capability is required"),
        ([{"name": "a", "capability": ""}], r"params.steps\[0\].capability"),
        ([{"name": "a", "capability": "x", "type": 3}], r"params.steps\[0\].type"),
        ([{"name": "a", "capability": "x"}, {"name": "a", "capability": "y"}], r"steps\[1\].name 'a'"),
        ([{"name": "a.b", "capability": "x"}], "must not contain"),
        ([{"name": "a", "capability": "x", "agent": "p1"}], "agent"),
        ([{"name": "a", "capability": "x", "input": {"v": "$steps.a.output"}}], "'a'"),
        (
            [
                {"name": "a", "capability": "x", "input": {"v": "$steps.b.output.z"}},
                {"name": "b", "capability": "y"},
            ],
            "does not run before",
        ),
        ([{"name": "a", "capability": "x", "input": {"v": "$steps.ghost.output"}}], "ghost"),
        ([{"name": "a", "capability": "x", "input": {"v": "$output"}}], "bad path '\\$output'"),
        ([{"name": "a", "capability": "x", "input": {"v": ["$steps.a"]}}], "bad path"),
        ([{"name": "a", "capability": "x", "input": {"v": "$steps.a.result"}}], "bad path"),
        ([{"name": "a", "capability": "x", "input": {"v": "$"}}], "bad path"),
        ([{"name": "a", "capability": "x", "input": ["$input"]}], "must be an object or a \\$path"),
        ([{"name": "a", "capability": "x", "input": "$$literal"}], "must be an object"),
    ],
)
def test_validate_names_the_bad_step(steps: Any, fragment: str) -> None:
    raw = {} if steps is None else {"steps": steps}
    spec = SessionSpec("chain", "work", (), PAYLOAD, raw, ())
    with pytest.raises(SpecError, match=fragment):
        validate(spec)


def test_validate_refuses_unknown_params() -> None:
    with pytest.raises(SpecError, match="stepz"):
        validate(make_spec(stepz=[]))


def test_validate_accepts_a_good_spec() -> None:
    validate(make_spec())
