"""What the server-sent event streams share."""

from __future__ import annotations

import re

from fastapi import Request

from app.errors import InvalidInput

# Event ids are BIGINT sequence values: 18 digits at most keep one within 64 bits (the database refuses more).
EVENT_ID_PATTERN = r"^[0-9]{0,18}$"  # empty: from the start
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


def resume_after(request: Request, last_event_id: str | None) -> int:
    """The event id to resume after: the `Last-Event-ID` header or `?after=`; 0 for the whole stream."""
    after = last_event_id or request.query_params.get("after") or "0"
    if not _EVENT_ID.match(after):
        raise InvalidInput(
            "Last-Event-ID must be an event id this stream sent",
            errors=[{"field": "header.last-event-id", "message": "not an event id", "type": "value_error"}],
        )
    return int(after)
