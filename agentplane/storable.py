"""What PostgreSQL and the JSON encoder accept, checked at the edge on every path (REST and WebSocket).

The rule, the same everywhere (docs/reliability.md):
- text (JSON strings and object keys, and plain text fields) must not contain NUL (U+0000): JSONB and TEXT
  columns refuse it;
- integers must lie in the signed 64-bit range (BIGINT columns, and the largest integer orjson writes);
- numbers must be finite (JSON has no NaN or infinity; ``1e400`` would be stored as ``null``);
- JSON values nest at most ``MAX_DEPTH`` levels (arrays and objects).

Input that breaks the rule is refused with the path of the first offending value (``payload.items.3.name``)
rather than altered, so what a client reads back is what it sent.

It lives in the agent package, not the server's, because the wire protocol (agentplane.protocol) applies it to
frames on both ends; app.storable re-exports it for the server.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator

MAX_DEPTH = 64
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_problem(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The first reason ``value`` cannot be stored, as ``"path: reason"``, or None when it can."""
    if isinstance(value, str):
        reason = _text_problem(value)
        return f"{path or 'value'}: {reason}" if reason else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'value'}: number must be finite"
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return None
        return f"{path or 'value'}: integer out of range (must fit in 64 bits signed)"
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            return f"{path or 'value'}: nested deeper than {MAX_DEPTH} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and (reason := _text_problem(key)):
                return f"{path or 'value'}: object keys: {reason}"
            child = f"{path}.{key}" if path else str(key)
            problem = json_problem(item, child, depth + 1)
            if problem is not None:
                return problem
        return None
    return None


def storable_json(value: Any) -> Any:
    """A pydantic validator: ``value`` as given, or a ValueError naming where storage would refuse it."""
    problem = json_problem(value)
    if problem is not None:
        # pydantic prefixes the field's own location; the path inside the value is part of the message.
        raise ValueError(problem.removeprefix("value: "))
    return value


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "text must not contain NUL (\\u0000)"
    # A lone surrogate (JSON "\\ud800" without its pair) is no character: UTF-8, orjson and PostgreSQL refuse
    # it. Only REST bodies can carry one (Python's JSON parser accepts it); ASCII text is skipped at once.
    if not value.isascii() and _SURROGATE.search(value):
        return "text must not contain a lone surrogate (\\ud800-\\udfff)"
    return None


def _storable_text(value: str) -> str:
    reason = _text_problem(value)
    if reason:
        raise ValueError(reason)
    return value


StorableJson = Annotated[Any, AfterValidator(storable_json)]
"""Any JSON value that PostgreSQL's JSONB and orjson accept (see the module docstring)."""

StorableText = Annotated[str, AfterValidator(_storable_text)]
"""A string without NUL."""
