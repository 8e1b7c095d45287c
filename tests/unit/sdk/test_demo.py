"""The demo handlers, called directly: pure functions first, then the handlers' usage and cancellation."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentplane import demo
from agentplane.sdk import HandlerResult, TaskContext, TaskFailed
from app.gateway.protocol import Assign, Progress


def context(task_type: str, payload: dict[str, Any], sink: list[Progress] | None = None) -> TaskContext:
    frame = Assign(
        assignment_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        task_type=task_type,
        payload=payload,
        timeout=60,
        deadline=datetime.now(UTC) + timedelta(minutes=1),
        attempt=1,
    )
    return TaskContext(frame, (sink if sink is not None else []).append)


def test_word_count_lower_cases_and_splits_on_non_alphanumerics() -> None:
    output = demo.word_count({"lines": ["The cat; the CAT!", "snake_case 42 café"]})
    assert output == {"42": 1, "case": 1, "café": 1, "cat": 2, "snake": 1, "the": 2}
    assert list(output) == sorted(output)


def test_word_count_takes_text_lines_or_both() -> None:
    assert demo.word_count({"text": "a b a"}) == {"a": 2, "b": 1}
    assert demo.word_count({"lines": ["a"], "text": "a"}) == {"a": 2}
    assert demo.word_count({"lines": []}) == {}


def test_word_count_chunks_sum_to_the_whole() -> None:
    lines = ["to be or not to be", "that is the question", "to sleep perchance to dream", "be"]
    total: Counter[str] = Counter()
    for start in range(0, len(lines), 2):
        total.update(demo.word_count({"lines": lines[start : start + 2]}))
    assert dict(total) == demo.word_count({"lines": lines})


@pytest.mark.parametrize(
    "payload", [{}, {"lines": "not a list"}, {"lines": ["ok", 3]}, {"text": 5}, {"lines": [], "text": None}]
)
def test_word_count_refuses_a_bad_payload(payload: dict[str, Any]) -> None:
    with pytest.raises(TaskFailed) as caught:
        demo.word_count(payload)
    assert caught.value.code == "invalid_payload"


def test_text_stats() -> None:
    text = "Hello world. How are you?\nFine!"
    assert demo.text_stats({"text": text}) == {
        "characters": len(text),
        "words": 6,
        "lines": 2,
        "sentences": 3,
        "average_word_length": round(23 / 6, 2),
    }
    assert demo.text_stats({"text": ""}) == {
        "characters": 0,
        "words": 0,
        "lines": 0,
        "sentences": 0,
        "average_word_length": 0.0,
    }


def test_json_transform_picks_in_order_then_renames() -> None:
    data = {"a": 1, "b": {"x": 2}, "c": 3}
    assert demo.json_transform({"data": data}) == data
    assert demo.json_transform({"data": data, "pick": ["c", "a", "missing"], "rename": {"a": "alpha"}}) == {
        "c": 3,
        "alpha": 1,
    }


@pytest.mark.parametrize(
    "payload",
    [
        {"data": [1, 2]},
        {"data": {}, "pick": "a"},
        {"data": {}, "pick": [1]},
        {"data": {}, "rename": {"a": 1}},
    ],
)
def test_json_transform_refuses_a_bad_payload(payload: dict[str, Any]) -> None:
    with pytest.raises(TaskFailed):
        demo.json_transform(payload)


def test_echo_returns_the_payload() -> None:
    assert demo.echo({"anything": [1, "two"]}) == {"anything": [1, "two"]}


def test_generate_makes_a_documented_stub_named_after_the_spec() -> None:
    output = demo.generate({"spec": "add two numbers", "params": ["a", "b"]})
    assert output["name"] == "add_two_numbers"
    assert output["language"] == "python"
    assert output["code"] == (
        "def add_two_numbers(a, b):\n"
        '    """Add two numbers."""\n'
        "    raise NotImplementedError('add two numbers')\n"
    )
    compile(output["code"], "<generated>", "exec")
    assert demo.generate({"spec": "42 answers"})["name"] == "fn_42_answers"


def test_review_comments_line_by_line() -> None:
    code = (
        "def f(x):\n\tprint(x)   \n    # TODO speed up\n    try:\n        pass\n    except:\n        pass\n"
    )
    output = demo.review({"code": code})
    assert output["code"] == code
    assert output["approved"] is False
    assert output["comments"] == [
        "line 1: function `f` has no docstring",
        "line 2: trailing whitespace",
        "line 2: tab indentation",
        "line 2: print() left in; use logging",
        "line 3: unresolved TODO/FIXME",
        "line 6: bare except",
    ]


def test_refactor_fixes_what_review_flags() -> None:
    messy = (
        "def load_data(path):\n\ttry:   \n\t\treturn open(path).read()\n\texcept:\n\t\treturn None\n\n\n\n"
    )
    refactored = demo.refactor({"comments": ["..."], "input": {"code": messy}})
    assert refactored["code"] == (
        "def load_data(path):\n"
        '    """Load data."""\n'
        "    try:\n"
        "        return open(path).read()\n"
        "    except Exception:\n"
        "        return None\n"
    )
    assert refactored["changes"] == [
        "normalised whitespace (tabs, trailing spaces)",
        "replaced bare `except:` with `except Exception:`",
        "documented `load_data`",
    ]
    assert demo.review(refactored)["approved"] is True


def test_the_code_chain_passes_each_output_on() -> None:
    generated = demo.generate({"spec": "parse a config file"})
    reviewed = demo.review(generated)
    assert reviewed["comments"] == ["line 3: the function is still a stub"]
    assert demo.refactor(reviewed)["code"] == generated["code"]


def test_answer_prefers_the_given_answer() -> None:
    assert demo.answer({"answer": {"value": 7}, "question": "ignored"}) == {"answer": {"value": 7}}


@pytest.mark.parametrize(
    ("question", "expected"),
    [("What is 6 * 7?", 42), ("(1 + 2) ** 3", 27), ("compute 7 / 2", 3.5), ("-4 // 3", -2)],
)
def test_answer_evaluates_arithmetic(question: str, expected: float) -> None:
    assert demo.answer({"question": question}) == {"answer": expected}


def test_answer_is_deterministic_for_other_questions() -> None:
    yes_no = demo.answer({"question": "Is the sky blue?"})
    assert yes_no["answer"] in {"yes", "no"}
    assert demo.answer({"question": "  is THE sky   blue? "}) == yes_no  # normalised before answering
    open_question = demo.answer({"question": "Who wrote Hamlet?"})
    assert str(open_question["answer"]).startswith("sha256:")
    assert demo.answer({"question": "who wrote hamlet?"}) == open_question


def test_answer_refuses_division_by_zero_and_missing_question() -> None:
    with pytest.raises(TaskFailed):
        demo.answer({"question": "1/0"})
    with pytest.raises(TaskFailed):
        demo.answer({})


def test_metered_handlers_report_words_as_tokens() -> None:
    result = demo.DEMO_HANDLERS["word-count"](context("word-count", {"text": "one two two"}))
    assert isinstance(result, HandlerResult)
    assert result.output == {"one": 1, "two": 2}
    assert result.usage is not None
    # {"text":"one two two"} has 4 words; {"one":1,"two":2} has 4 too.
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 4)
    assert result.usage.cost == pytest.approx(8 * demo.DEMO_PRICE_PER_TOKEN)


async def test_sleep_reports_progress_and_its_duration() -> None:
    sink: list[Progress] = []
    result = await demo.sleep(context("sleep", {"ms": 20}, sink))
    assert result.output == {"slept_ms": 20}
    assert [frame.progress for frame in sink] == pytest.approx([step / 10 for step in range(1, 11)])


async def test_sleep_honours_cancellation() -> None:
    ctx = context("sleep", {"ms": 60_000})
    task = asyncio.create_task(demo.sleep(ctx))
    await asyncio.sleep(0)  # let it start sleeping
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("ms", [-1, "10", True, demo.MAX_SLEEP_MS + 1])
async def test_sleep_refuses_a_bad_duration(ms: Any) -> None:
    with pytest.raises(TaskFailed):
        await demo.sleep(context("sleep", {"ms": ms}))


def test_build_demo_agent_serves_and_advertises_every_demo_task_type() -> None:
    agent = demo.build_demo_agent(
        "ws://127.0.0.1:1/ws/agents", "ap_key", agent_id="demo-1-a", max_concurrency=2
    )
    register = agent._register_frame()
    assert [cap.name for cap in register.capabilities] == list(demo.DEMO_HANDLERS)
    assert set(demo.DEMO_HANDLERS) == {
        "word-count",
        "text-stats",
        "json-transform",
        "echo",
        "sleep",
        "generate",
        "review",
        "refactor",
        "answer",
    }
    assert (register.agent_id, register.model, register.max_concurrency) == ("demo-1-a", "demo-1", 2)
