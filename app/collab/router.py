from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from sse_starlette.sse import EventSourceResponse

from app import tracing
from app.collab import service, watch
from app.collab.schemas import SessionCreate, SessionList, SessionOut, SessionStatusName, StrategyName
from app.deps import ClientDep, MakerDep, MetricsDep, SessionDep, SettingsDep, SignalsDep
from app.ownership import Owner
from app.sse import resume_after

router = APIRouter(prefix="/sessions", tags=["sessions"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SessionOut)
async def create_session(
    body: SessionCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    signals: SignalsDep,
    metrics: MetricsDep,
    principal: ClientDep,
) -> SessionOut:
    # One trace per session: the request's `traceparent` (ignored when invalid, per W3C) is its parent.
    header = request.headers.get("traceparent")
    owner, server = Owner.of(principal), tracing.SERVER
    if server is None:
        created = await service.create_session(
            session, settings, body, owner=owner, signals=signals, metrics=metrics,
            traceparent=tracing.client_traceparent(header),
        )  # fmt: skip
    else:
        with server.session(header, body.strategy) as span:
            created = await service.create_session(
                session, settings, body, owner=owner, signals=signals, metrics=metrics,
                traceparent=server.traceparent(span),
            )  # fmt: skip
            span.set_attribute("agentplane.session.id", str(created.id))
    response.headers["Location"] = f"/api/v1/sessions/{created.id}"
    return created


@router.get("", response_model=SessionList)
async def list_sessions(
    session: SessionDep,
    principal: ClientDep,
    status: SessionStatusName | None = None,
    strategy: StrategyName | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SessionList:
    rows, next_cursor = await service.list_sessions(
        session, viewer=principal, status=status, strategy=strategy, cursor=cursor, limit=limit
    )
    return SessionList(items=[service.to_out(row) for row in rows], next_cursor=next_cursor)


@router.get("/{session_id}", response_model=SessionOut)
async def get_session(
    session_id: uuid.UUID,
    maker: MakerDep,
    principal: ClientDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for the session to end.")] = 0,
) -> SessionOut:
    return await watch.wait_for_end(maker, session_id, wait, viewer=principal)


@router.post("/{session_id}/cancel", response_model=SessionOut)
async def cancel_session(
    session_id: uuid.UUID,
    session: SessionDep,
    signals: SignalsDep,
    metrics: MetricsDep,
    principal: ClientDep,
) -> SessionOut:
    return await service.cancel_session(
        session, session_id, viewer=principal, signals=signals, metrics=metrics
    )


@router.get("/{session_id}/events")
async def session_events(
    session_id: uuid.UUID,
    request: Request,
    maker: MakerDep,
    principal: ClientDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    after = resume_after(request, last_event_id)
    # A 404 (no such session, or not this key's) must come before the stream starts.
    await watch.ensure_exists(maker, session_id, viewer=principal)
    return EventSourceResponse(watch.event_stream(maker, session_id, after), ping=15)
