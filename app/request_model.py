"""The base of every request body: what a client sends is taken as sent, or refused naming the field.

- ``strict``: no coercion. ``"priority": "3"`` or ``false`` and ``"max_concurrency": "4"`` are client bugs
  that lax parsing would hide (``false`` became priority 0); a number is a JSON number, a flag a boolean.
  Durations keep their documented string form (``"30s"``): their own validator parses it first.
- ``allow_inf_nan=False``: Python's JSON parser reads ``NaN`` and ``Infinity``, which PostgreSQL stores but no
  JSON answer can carry back.
- ``extra="forbid"``: a misspelt option is an error, not silently the default.

Text fields that are stored use ``StorableText`` and JSON values ``StorableJson`` (app/storable.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from agentplane.storable import storable_json
from app.config import parse_duration


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


STORABLE_VALUE_REF = "#/components/schemas/StorableValue"

StorableObject = Annotated[
    dict[str, Any],
    AfterValidator(storable_json),
    WithJsonSchema({"type": "object", "additionalProperties": {"$ref": STORABLE_VALUE_REF}}),
]
"""A JSON object PostgreSQL's JSONB accepts (no NUL in keys or text, 64-bit integers, bounded depth); the
OpenAPI document describes the rule as the ``StorableValue`` schema (app/openapi.py)."""


def _json_integer(value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3 (JSON Schema agrees), "3" and true are not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(_json_integer)]
"""An integer field of a request: a JSON number without a fraction; strings and booleans are refused."""


MAX_SECONDS = 7 * 24 * 3600
_FRACTION = r"(?:\.[0-9]{1,3})?"
# The string form of a request duration, written so that every string it admits is within (0, 7 days]: the
# OpenAPI document carries this pattern, so a client (or a schema-based fuzzer) that follows the schema is
# never refused. Units: ms, s (or none), m, h.
DURATION_PATTERN = (
    r"^(?:"
    rf"[1-9][0-9]{{0,7}}{_FRACTION}ms"
    rf"|[1-9][0-9]{{0,4}}{_FRACTION}s?"
    rf"|[1-9][0-9]{{0,3}}{_FRACTION}m"
    rf"|(?:[1-9][0-9]?|1[0-5][0-9]|16[0-7]){_FRACTION}h"
    r")$"
)
_DURATION_TEXT = re.compile(DURATION_PATTERN)


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        if _DURATION_TEXT.match(value) is None:
            raise ValueError(
                "expected a duration like 30s, 5m, 2h or 250ms (more than 0, at most 7 days) "
                "or a number of seconds"
            )
        return parse_duration(value)
    return value  # a number: the float schema below checks it (strictly: a boolean is not a number)


Seconds = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(gt=0, le=MAX_SECONDS),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
"""A request duration: seconds as a number, or ``30s``/``5m``/``2h``/``250ms``; in (0, 7 days]."""
