from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from app.collab.strategies import STRATEGIES, map_reduce
from app.collab.strategies.base import Decision, FinishedSubtask, SessionSpec, SpecError, SubtaskSpec
from app.collab.strategies.map_reduce import step, validate


def make_spec(items: Any, participants: tuple[str, ...] = ("a1", "a2"), **params: Any) -> SessionSpec:
    return SessionSpec(
        strategy="map_reduce",
        task_type="count",
        capabilities=("text",),
        payload={"lines": items, "lang": "en"},
        params={"split_field": "lines", "chunk_size": 2, **params},
        participants=participants,
    )


def ok(key: str, output: Any) -> FinishedSubtask:
    return FinishedSubtask(key=key, status="succeeded", output=output, error=None, agent_id="a1")


def bad(key: str, status: str = "failed") -> FinishedSubtask:
    return FinishedSubtask(key, status, None, {"code": "boom", "message": "model overloaded"}, "a1")


def run(spec: SessionSpec, answer: Callable[[SubtaskSpec], Any]) -> Decision:
    """Drive a session to its end, finishing every submitted subtask at once with answer(subtask)."""
    decision = step(spec, {}, ())
    for _ in range(100):
        json.dumps(decision.state)  # the runner stores it as JSONB after every step
        if decision.done:
            return decision
        assert decision.submit, "a session that is not done must have work in flight"
        decision = step(spec, decision.state, tuple(ok(s.key, answer(s)) for s in decision.submit))
    raise AssertionError("session did not finish")


def test_registered() -> None:
    assert STRATEGIES["map_reduce"] is map_reduce


def test_first_step_submits_one_subtask_per_chunk() -> None:
    decision = step(make_spec(["a", "b", "c", "d", "e"]), {}, ())
    assert not decision.done
    assert [s.key for s in decision.submit] == ["map-0", "map-1", "map-2"]
    first = decision.submit[0]
    assert first.type == "count"
    assert first.capabilities == ("text",)
    assert first.agent_ids == ("a1", "a2")
    assert first.payload == {"lines": ["a", "b"], "lang": "en"}
    assert decision.submit[2].payload == {"lines": ["e"], "lang": "en"}
    assert decision.round == 0


def test_no_participants_means_any_capable_agent() -> None:
    decision = step(make_spec(["a"], participants=()), {}, ())
    assert decision.submit[0].agent_ids is None


def test_a_string_is_split_into_lines() -> None:
    decision = step(make_spec("one\ntwo\r\nthree\n"), {}, ())
    assert [s.payload["lines"] for s in decision.submit] == [["one", "two"], ["three"]]


@pytest.mark.parametrize(("reducer", "identity"), [("concat", []), ("sum", 0), ("merge", {}), ("vote", None)])
def test_empty_input_is_done_at_once_with_the_reducer_identity(reducer: str, identity: Any) -> None:
    decision = step(make_spec([], reducer=reducer), {}, ())
    assert decision.done
    assert decision.status == "succeeded"
    assert decision.result == identity
    assert decision.submit == ()


def test_empty_input_still_runs_the_reduce_agent() -> None:
    spec = make_spec([], reducer="agent", reduce_capability="summarise")
    decision = step(spec, {}, ())
    assert not decision.done
    (reduce,) = decision.submit
    assert reduce.key == "reduce"
    assert reduce.payload == {"outputs": [], "input": {"lang": "en"}}


def test_one_chunk() -> None:
    decision = run(make_spec(["x", "y"], reducer="concat"), lambda s: [len(s.payload["lines"])])
    assert decision.result == [2]


def test_chunk_size_larger_than_the_input_gives_one_chunk() -> None:
    decision = step(make_spec(["x", "y", "z"], chunk_size=50), {}, ())
    assert [s.payload["lines"] for s in decision.submit] == [["x", "y", "z"]]


def test_max_parallel_bounds_the_subtasks_in_flight() -> None:
    spec = make_spec(list(range(10)), chunk_size=1, max_parallel=3)
    first = step(spec, {}, ())
    assert [s.key for s in first.submit] == ["map-0", "map-1", "map-2"]

    second = step(spec, first.state, (ok("map-1", 1),))
    assert [s.key for s in second.submit] == ["map-3"]

    idle = step(spec, second.state, ())
    assert idle.submit == ()
    assert idle.state == second.state
    assert not idle.done

    third = step(spec, idle.state, (ok("map-0", 0), ok("map-2", 2)))
    assert [s.key for s in third.submit] == ["map-4", "map-5"]


def test_max_parallel_defaults_to_the_spec() -> None:
    spec = make_spec(list(range(30)), chunk_size=1)
    assert len(step(spec, {}, ()).submit) == spec.max_parallel == 20


def test_concat_keeps_chunk_order_whatever_the_finish_order() -> None:
    spec = make_spec(["a", "b", "c"], chunk_size=1)
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (ok("map-2", ["C1", "C2"]), ok("map-0", "A")))
    decision = step(spec, decision.state, (ok("map-1", ["B"]),))
    assert decision.done
    assert decision.result == ["A", "B", "C1", "C2"]


def test_sum_adds_numbers_and_nested_dicts_key_by_key() -> None:
    outputs = {
        "map-0": {"words": 3, "by_lang": {"en": 2, "fr": 1}},
        "map-1": {"words": 4.5, "by_lang": {"en": 1, "de": {"x": 2}}, "lines": 2},
    }
    decision = run(make_spec(["a", "b", "c"], reducer="sum"), lambda s: outputs[s.key])
    assert decision.result == {"words": 7.5, "by_lang": {"en": 3, "fr": 1, "de": {"x": 2}}, "lines": 2}


def test_sum_of_plain_numbers() -> None:
    assert run(make_spec(list(range(7)), reducer="sum"), lambda s: sum(s.payload["lines"])).result == 21


@pytest.mark.parametrize(
    ("outputs", "culprit", "fragment"),
    [
        ({"map-0": 1, "map-1": "two"}, "map-1", "not a number"),
        ({"map-0": {"n": 1}, "map-1": {"n": True}}, "map-1", "'n'"),
        ({"map-0": {"n": 1}, "map-1": 5}, "map-1", "earlier chunks have an object"),
        ({"map-0": {"n": {"deep": 1}}, "map-1": {"n": {"deep": [1]}}}, "map-1", "'n.deep'"),
        ({"map-0": None, "map-1": 1}, "map-0", "null"),
    ],
)
def test_sum_of_something_else_fails_naming_the_chunk(
    outputs: dict[str, Any], culprit: str, fragment: str
) -> None:
    decision = run(make_spec(["a", "b", "c"], reducer="sum"), lambda s: outputs[s.key])
    assert decision.status == "failed"
    assert decision.error is not None
    assert decision.error["code"] == "reduce_failed"
    assert decision.error["subtask"] == culprit
    assert culprit in decision.error["message"]
    assert fragment in decision.error["message"]


def test_merge_is_a_union_where_later_chunks_win() -> None:
    outputs = {"map-0": {"a": 1, "b": 1}, "map-1": {"b": 2, "c": 2}}
    assert run(make_spec(["a", "b", "c"], reducer="merge"), lambda s: outputs[s.key]).result == {
        "a": 1,
        "b": 2,
        "c": 2,
    }


def test_merge_of_a_non_object_fails_naming_the_chunk() -> None:
    outputs = {"map-0": {"a": 1}, "map-1": ["a"]}
    decision = run(make_spec(["a", "b", "c"], reducer="merge"), lambda s: outputs[s.key])
    assert decision.error is not None
    assert (decision.error["code"], decision.error["subtask"]) == ("reduce_failed", "map-1")


def test_vote_picks_the_most_common_output_after_normalisation() -> None:
    outputs = [{"label": "spam", "p": 1}, {"label": "ham"}, {"p": 1.0, "label": "spam"}]
    decision = run(
        make_spec(["a", "b", "c"], chunk_size=1, reducer="vote"), lambda s: outputs[int(s.key[4:])]
    )
    assert decision.result == {"label": "spam", "p": 1}


def test_vote_tie_goes_to_the_first_seen_in_chunk_order() -> None:
    outputs = ["ham", "spam", "spam", "ham"]
    spec = make_spec(list("abcd"), chunk_size=1, reducer="vote")
    decision = step(spec, {}, ())
    # Finish in reverse so "first finished" and "first in chunk order" disagree.
    decision = step(spec, decision.state, tuple(ok(f"map-{i}", outputs[i]) for i in (3, 2, 1, 0)))
    assert decision.result == "ham"


def test_agent_reducer_submits_one_reduce_subtask_after_every_map() -> None:
    spec = make_spec(["a", "b", "c"], reducer="agent", reduce_capability="summarise", reduce_type="summary")
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (ok("map-1", "second"),))
    assert decision.submit == ()
    decision = step(spec, decision.state, (ok("map-0", "first"),))
    (reduce,) = decision.submit
    assert reduce == SubtaskSpec(
        key="reduce",
        type="summary",
        capabilities=("summarise",),
        payload={"outputs": ["first", "second"], "input": {"lang": "en"}},
        agent_ids=None,
    )
    assert step(spec, decision.state, ()).submit == ()  # never submitted twice
    decision = step(spec, decision.state, (ok("reduce", {"summary": "both"}),))
    assert (decision.done, decision.status, decision.result) == (True, "succeeded", {"summary": "both"})


def test_reduce_type_defaults_to_the_session_type() -> None:
    decision = run(make_spec(["a"], reducer="agent", reduce_capability="summarise"), lambda s: s.type)
    assert decision.result == "count"


def test_a_failed_reduce_fails_the_session() -> None:
    spec = make_spec(["a"], reducer="agent", reduce_capability="summarise")
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (ok("map-0", 1),))
    decision = step(spec, decision.state, (bad("reduce", "timed_out"),))
    assert decision.status == "failed"
    assert decision.error is not None
    assert (decision.error["code"], decision.error["subtask"]) == ("subtask_failed", "reduce")
    assert "timed_out" in decision.error["message"]


@pytest.mark.parametrize("status", ["failed", "cancelled", "timed_out"])
def test_a_failed_map_fails_the_session_and_stops_submitting(status: str) -> None:
    spec = make_spec(list(range(10)), chunk_size=1, max_parallel=4)
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (ok("map-0", 0), bad("map-3", status)))
    assert decision.done
    assert decision.status == "failed"
    assert decision.submit == ()
    assert decision.error == {
        "code": "subtask_failed",
        "subtask": "map-3",
        "message": f"map-3 {status}: model overloaded",
    }
    later = step(spec, decision.state, (ok("map-1", 1),))
    assert later == decision


def test_allow_partial_reduces_what_succeeded_and_lists_the_missing() -> None:
    spec = make_spec(list(range(5)), chunk_size=1, max_parallel=2, reducer="sum", allow_partial=True)
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (bad("map-1"),))
    assert [s.key for s in decision.submit] == ["map-2"]
    decision = step(spec, decision.state, (ok("map-0", 10), bad("map-2", "timed_out")))
    decision = step(spec, decision.state, (ok("map-3", 30),))
    decision = step(spec, decision.state, (ok("map-4", 40),))
    assert (decision.done, decision.status, decision.result, decision.error) == (True, "succeeded", 80, None)
    assert decision.state["missing"] == ["map-1", "map-2"]


def test_allow_partial_tells_the_reduce_agent_what_is_missing() -> None:
    spec = make_spec(["a", "b"], chunk_size=1, reducer="agent", reduce_capability="r", allow_partial=True)
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (bad("map-0"), ok("map-1", "B")))
    assert decision.submit[0].payload == {"outputs": ["B"], "input": {"lang": "en"}, "missing": ["map-0"]}


def test_allow_partial_still_fails_when_every_chunk_failed() -> None:
    spec = make_spec(["a", "b"], chunk_size=1, allow_partial=True)
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (bad("map-1"), bad("map-0")))
    assert decision.status == "failed"
    assert decision.error is not None
    assert (decision.error["code"], decision.error["subtask"]) == ("subtask_failed", "map-0")


def test_a_redelivered_subtask_is_counted_once() -> None:
    spec = make_spec(list(range(4)), chunk_size=1, max_parallel=2, reducer="sum")
    decision = step(spec, {}, ())
    decision = step(spec, decision.state, (ok("map-0", 5), ok("map-0", 5)))
    assert [s.key for s in decision.submit] == ["map-2"]
    again = step(spec, decision.state, (ok("map-0", 5),))
    assert again.submit == ()
    assert again.state == decision.state
    decision = step(spec, decision.state, (ok("map-1", 1), ok("map-2", 2), ok("map-9", 99), ok("zzz", 1)))
    decision = step(spec, decision.state, (ok("map-0", 5), ok("map-3", 3)))
    assert decision.result == 11
    assert step(spec, decision.state, (ok("map-3", 3),)) == decision


def test_step_never_mutates_the_state_it_is_given() -> None:
    spec = make_spec(list(range(3)), chunk_size=1)
    first = step(spec, {}, ())
    snapshot = json.loads(json.dumps(first.state))
    step(spec, first.state, (ok("map-0", [1]),))
    assert first.state == snapshot


def test_word_count() -> None:
    text = "the cat sat\non the mat\n\nthe end\ncat and dog\nthe dog sat"
    spec = make_spec(text, chunk_size=2, max_parallel=2, reducer="sum")

    def count_words(subtask: SubtaskSpec) -> dict[str, int]:
        return dict(Counter(word for line in subtask.payload["lines"] for word in line.split()))

    decision = run(spec, count_words)
    assert decision.status == "succeeded"
    assert decision.result == dict(Counter(text.split()))
    assert decision.result["the"] == 4
    assert decision.state["chunks"] == 3


@pytest.mark.parametrize(
    ("params", "payload", "fragment"),
    [
        ({"split_field": None}, None, "params.split_field"),
        ({"split_field": ""}, None, "params.split_field"),
        ({"chunk_size": None}, None, "params.chunk_size is required"),
        ({"chunk_size": 0}, None, "params.chunk_size"),
        ({"chunk_size": True}, None, "params.chunk_size"),
        ({"chunk_size": "2"}, None, "params.chunk_size"),
        ({"max_parallel": 0}, None, "params.max_parallel"),
        ({"reducer": "median"}, None, "params.reducer"),
        ({"reducer": "agent"}, None, "params.reduce_capability"),
        ({"allow_partial": "yes"}, None, "params.allow_partial"),
        ({"chunksize": 3}, None, "chunksize"),
        ({}, {"lang": "en"}, "payload.lines"),
        ({}, {"lines": {"a": 1}}, "payload.lines"),
        ({}, {"lines": 42}, "payload.lines"),
    ],
)
def test_validate_names_the_bad_param(
    params: dict[str, Any], payload: dict[str, Any] | None, fragment: str
) -> None:
    raw = {"split_field": "lines", "chunk_size": 2, **params}
    spec = SessionSpec(
        strategy="map_reduce",
        task_type="count",
        capabilities=(),
        payload=payload if payload is not None else {"lines": []},
        params={key: value for key, value in raw.items() if value is not None},
        participants=(),
    )
    with pytest.raises(SpecError, match=fragment.replace(".", r"\.")):
        validate(spec)


def test_validate_accepts_a_good_spec() -> None:
    validate(make_spec(["a"], reducer="agent", reduce_capability="r", max_parallel=1, allow_partial=True))
