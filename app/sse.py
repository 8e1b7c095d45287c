"""What the server-sent event streams share."""

from __future__ import annotations

from fastapi import Request

from app.errors import InvalidInput


def resume_after(request: Request, last_event_id: str | None) -> int:
    """The event id to resume after: the `Last-Event-ID` header or `?after=`; 0 for the whole stream."""
    after = last_event_id or request.query_params.get("after") or "0"
    if not after.isdigit():
        raise InvalidInput(
            "Last-Event-ID must be an event id this stream sent",
            errors=[{"field": "header.last-event-id", "message": "not an event id", "type": "value_error"}],
        )
    return int(after)
