from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator

UsageGroup = Literal["model", "agent", "task_type"]

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _date_time_text(value: Any) -> Any:
    # Only an RFC 3339 date-time, as documented: pydantic alone reads "12" as Unix seconds and takes a date
    # without a time or an offset, which the OpenAPI document (format: date-time) does not allow.
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise ValueError("expected an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z")
    return value


Since = Annotated[datetime, BeforeValidator(_date_time_text)]


class UsageRow(BaseModel):
    key: str
    attempts: int
    input_tokens: int
    output_tokens: int
    cost: float


class UsageReport(BaseModel):
    group_by: UsageGroup
    since: datetime | None
    items: list[UsageRow]
    total: UsageRow
