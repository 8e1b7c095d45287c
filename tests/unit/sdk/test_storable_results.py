"""The SDK never sends a result the server cannot store: it sends a failure naming the field instead."""

from __future__ import annotations

import json
import uuid

import pytest

from agentplane._sdk_context import encode_result
from app.gateway.protocol import Result, Usage, parse_agent_frame, result_problem


@pytest.mark.parametrize(
    ("output", "usage", "named"),
    [
        ({"text": "a\u0000b"}, Usage(), "output.text"),
        ({"k\u0000": 1}, Usage(), "output"),
        (json.loads("[" * 80 + "]" * 80), Usage(), "nested deeper"),
        ({"ok": True}, Usage(input_tokens=2**63), "usage.input_tokens"),
        ({"ok": True}, Usage(output_tokens=2**53 + 1), "usage.output_tokens"),
        ({"ok": True}, Usage(cost=1e308), "usage.cost"),
    ],
)
def test_an_unstorable_output_becomes_an_invalid_result_failure(
    output: object, usage: Usage, named: str
) -> None:
    result = Result(assignment_id=uuid.uuid4(), status="succeeded", output=output, usage=usage)
    sent = parse_agent_frame(encode_result(result, 1024 * 1024))
    assert isinstance(sent, Result)
    assert sent.status == "failed"
    assert sent.error is not None
    assert sent.error.code == "invalid_result"
    assert named in sent.error.message
    assert result_problem(sent) is None


def test_usage_at_its_bounds_is_storable() -> None:
    usage = Usage(input_tokens=2**53, output_tokens=2**53, cost=1e9)
    result = Result(assignment_id=uuid.uuid4(), status="succeeded", output=1, usage=usage)
    assert result_problem(result) is None


def test_a_storable_result_is_sent_as_it_is() -> None:
    result = Result(assignment_id=uuid.uuid4(), status="succeeded", output={"text": "fine", "n": 2**62})
    assert parse_agent_frame(encode_result(result, 1024 * 1024)) == result
