"""Query and path parameters obey the storable rule (app/storable.py): no NUL, on every route at once.

Request bodies are checked by their schemas (StorableText, StorableJson). Query and path parameters are
plain ``str`` in the routers, and a NUL in one (``?type=%00``, ``/agents/%00``) reached PostgreSQL, which
refused it with a 500. One check here covers every parameter of every route, present and future, and costs
nothing for a request without ``%00`` in its target. The answer is the usual 422 naming the parameter
(``query.type``, ``path.agent_id``)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import problem

NUL_MESSAGE = "text must not contain NUL (\\u0000)"


class StorableParams:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"%00" in scope["query_string"] or "\x00" in scope["path"]):
            fields = _query_fields(scope) + _path_fields(scope)
            if fields:
                errors = [{"field": field, "message": NUL_MESSAGE, "type": "value_error"} for field in fields]
                detail = f"{fields[0]}: {NUL_MESSAGE}"
                if len(fields) > 1:
                    detail += f" (and {len(fields) - 1} more)"
                response = problem(422, "invalid_input", "Invalid input", detail, None, errors=errors)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _query_fields(scope: Scope) -> list[str]:
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    return [f"query.{name.replace(chr(0), '?')}" for name, value in pairs if "\x00" in name + value]


def _path_fields(scope: Scope) -> list[str]:
    if "\x00" not in scope["path"]:
        return []
    # Name the parameter by the route templates of the OpenAPI document (only on this rare path).
    app: Any = scope.get("app")
    templates = app.openapi().get("paths", {}) if hasattr(app, "openapi") else {}
    for template in templates:
        if "{" not in template:
            continue
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        match = re.fullmatch(pattern, scope["path"])
        if match is not None:
            named = [f"path.{name}" for name, value in match.groupdict().items() if "\x00" in value]
            if named:
                return named
    return ["path"]
