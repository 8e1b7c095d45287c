from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

UsageGroup = Literal["model", "agent", "task_type"]


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
