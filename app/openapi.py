"""The OpenAPI document describes the errors the server really sends.

FastAPI documents every 422 as its own ``HTTPValidationError`` in ``application/json`` and nothing else, while
the server answers every error as RFC 9457 ``application/problem+json`` (app/errors.py). Generated clients and
schema-based fuzzers trust the document, so it is rewritten once, here, from what the edges do rather than
route by route (routers stay thin and cannot forget one):

- every ``/api/v1`` operation: 401, 403, 422 (any query parameter may be refused, e.g. one with NUL), 429 and
  503 (the database is unreachable), the last two with ``Retry-After``; 2xx answers may carry the
  ``RateLimit-*`` headers (app/ratelimit.py);
- with a path parameter: 404; a write (POST, DELETE): 409; with a request body: 400, 408 and 413;
- ``/readyz``: 503; server-sent event streams answer ``text/event-stream``, one event at a time;
- every operation: 431 (request headers over 64 KiB, refused by the HTTP layer before any route runs).

405 (a method the path does not have) is described once, in ``info.description``: an OpenAPI operation is
a method the path has, so no operation can answer it.

And the input rules the edges enforce where a router's annotation cannot say them: JSON values are
``StorableValue`` (app/storable.py: text without NUL, 64-bit integers) and ``Last-Event-ID`` is an event id.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from app.errors import PROBLEM_JSON, Problem
from app.sse import EVENT_ID_PATTERN
from app.storable import INT_MAX, INT_MIN

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
_RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "Requests this key may make at once (the bucket's size).",
    "RateLimit-Remaining": "Requests this key may make now.",
    "RateLimit-Reset": "Seconds until the bucket is full again.",
}
_DESCRIPTIONS = {
    400: "The request body could not be read.",
    401: "No key, an unknown key or a revoked key.",
    403: "The key lacks the scope this operation needs, or the resource is not the key's.",
    404: "No such resource (or not one this key may see).",
    408: "The request body came too slowly (`AGENTPLANE_HTTP_BODY_TIMEOUT`).",
    409: "The request conflicts with the resource's state or with existing data.",
    413: "The request body is over `AGENTPLANE_MAX_REQUEST_BYTES`.",
    431: "The request headers are over 64 KiB (the connection is then closed).",
    422: "Invalid input: `errors` names each field (`tasks.3.timeout`, `query.type`).",
    429: "This key is over its rate limit (`AGENTPLANE_RATE_LIMIT`); see `Retry-After`.",
    503: "The database is unreachable (or, for `/readyz`, not ready); see `Retry-After`.",
}
_TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}
_STORABLE_VALUE = {
    "description": "Any JSON value PostgreSQL's JSONB stores: text without NUL (U+0000), integers within "
    "64 bits (signed), at most 64 levels of nesting.",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX},
        {"type": "number", "not": {"type": "integer"}},
        _TEXT,
        {"type": "array", "items": {"$ref": "#/components/schemas/StorableValue"}},
        {
            "type": "object",
            "propertyNames": _TEXT,
            "additionalProperties": {"$ref": "#/components/schemas/StorableValue"},
        },
    ],
}
_SSE_EVENT = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
}
# Success answers a route's decorator cannot declare: a repeated idempotency key returns the first task.
_EXTRA_SUCCESS = {("post", "/api/v1/tasks"): ("201", "200", "The task submitted earlier with this key.")}


_METHOD_NOT_ALLOWED = (
    "A method a path does not have is answered 405 problem+json (`/problems/method_not_allowed`) with an "
    "`Allow` header listing the path's methods; every error is `application/problem+json` (`Problem`)."
)


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe_errors(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["StorableValue"] = _STORABLE_VALUE
    info = schema.setdefault("info", {})
    info["description"] = "\n\n".join(filter(None, (info.get("description"), _METHOD_NOT_ALLOWED)))
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _describe_operation(path, method, operation)
    return schema


def _describe_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        _describe_parameter(parameter)
    responses: dict[str, Any] = operation.setdefault("responses", {})
    statuses: set[int] = set()
    if path.startswith("/api/v1"):
        statuses |= {401, 403, 422, 429, 503}
        if "{" in path:
            statuses.add(404)
        if method in {"post", "put", "patch", "delete"}:
            statuses.add(409)
        if "requestBody" in operation:
            statuses |= {400, 408, 413}
        for code, success in responses.items():
            if code.startswith("2"):
                success.setdefault("headers", {}).update(_rate_limit_headers())
    elif path == "/readyz":
        statuses.add(503)
    if "422" in responses:
        statuses.add(422)
    statuses.add(431)
    for status in sorted(statuses):
        error: dict[str, Any] = {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
        }
        if status in {429, 503}:
            error["headers"] = dict(_RETRY_AFTER)
        responses[str(status)] = error
    if path.endswith("/events") and "200" in responses:
        responses["200"]["content"] = {"text/event-stream": {"schema": _SSE_EVENT}}
    extra = _EXTRA_SUCCESS.get((method, path))
    if extra is not None and extra[0] in responses:
        source, repeat, description = extra
        responses[repeat] = {**responses[source], "description": description}


def _rate_limit_headers() -> dict[str, Any]:
    return {
        name: {"description": text, "schema": {"type": "integer", "minimum": 0}}
        for name, text in _RATE_LIMIT_HEADERS.items()
    }


def _describe_parameter(parameter: dict[str, Any]) -> None:
    if parameter.get("in") == "header" and parameter.get("name", "").lower() == "last-event-id":
        parameter["schema"] = {"type": "string", "pattern": EVENT_ID_PATTERN}
        parameter["description"] = "Resume after this event id (the `id` of an event this stream sent)."


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for the route template ``path`` matches (for 405's Allow)."""
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{(\w+)\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return sorted(method.upper() for method in operations)
    return []
