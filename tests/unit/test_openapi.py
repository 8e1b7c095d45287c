"""The OpenAPI document describes the errors the server sends (problem+json) and the input it accepts."""

from __future__ import annotations

from typing import Any

from app.config import load_settings
from app.main import create_app

SCHEMA: dict[str, Any] = create_app(
    load_settings(database_url="postgresql+asyncpg://nobody@/nowhere")
).openapi()
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, methods in SCHEMA["paths"].items()
        for method, operation in methods.items()
    ]


def test_422_is_problem_json_not_fastapis_validation_error() -> None:
    assert "HTTPValidationError" not in SCHEMA["components"]["schemas"]
    problem = SCHEMA["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    for path, method, operation in _operations():
        if "422" in operation["responses"]:
            assert operation["responses"]["422"]["content"] == PROBLEM, (path, method)


def test_every_api_operation_documents_its_error_statuses() -> None:
    for path, method, operation in _operations():
        if not path.startswith("/api/v1"):
            continue
        statuses = set(operation["responses"])
        assert {"401", "403", "422", "429", "503"} <= statuses, (path, method)
        if "{" in path:
            assert "404" in statuses, (path, method)
        if method in {"post", "delete"}:
            assert "409" in statuses, (path, method)
        if "requestBody" in operation:
            assert {"408", "413"} <= statuses, (path, method)
        for status in ("401", "403", "404", "409", "413", "429", "503"):
            if status in statuses:
                assert operation["responses"][status]["content"] == PROBLEM, (path, method, status)
        for status in ("429", "503"):
            assert operation["responses"][status]["headers"]["Retry-After"]["required"] is True


def test_431_on_every_operation_and_405_in_the_description() -> None:
    for path, method, operation in _operations():
        assert operation["responses"]["431"]["content"] == PROBLEM, (path, method)
    assert "405" in SCHEMA["info"]["description"]
    assert "Allow" in SCHEMA["info"]["description"]


def test_a_repeated_idempotency_key_answer_is_documented() -> None:
    assert {"200", "201"} <= set(SCHEMA["paths"]["/api/v1/tasks"]["post"]["responses"])


def test_timeouts_are_more_than_zero_by_the_schema_too() -> None:
    timeout = SCHEMA["components"]["schemas"]["TaskCreate"]["properties"]["timeout"]
    number = next(option for option in timeout["anyOf"] if option.get("type") == "number")
    assert number["exclusiveMinimum"] == 0
    text = next(option for option in timeout["anyOf"] if option.get("type") == "string")
    assert "pattern" in text


def test_payloads_are_storable_values() -> None:
    payload = SCHEMA["components"]["schemas"]["TaskCreate"]["properties"]["payload"]
    assert payload["additionalProperties"] == {"$ref": "#/components/schemas/StorableValue"}
    integer = next(
        option
        for option in SCHEMA["components"]["schemas"]["StorableValue"]["anyOf"]
        if option["type"] == "integer"
    )
    assert (integer["minimum"], integer["maximum"]) == (-(2**63), 2**63 - 1)


def test_event_streams_are_documented_as_event_streams() -> None:
    responses = SCHEMA["paths"]["/api/v1/tasks/{task_id}/events"]["get"]["responses"]
    assert list(responses["200"]["content"]) == ["text/event-stream"]
