from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from sse_starlette.sse import EventSourceResponse

from app import tracing
from app.db.session import engine_of
from app.deps import ClientDep, MakerDep, MetricsDep, SessionDep, SettingsDep, SignalsDep
from app.ownership import Owner
from app.responses import json_response
from app.signals import Signals
from app.sse import resume_after
from app.tasks import service, submit, waiting, watch
from app.tasks.intake import Intake
from app.tasks.schemas import (
    AssignmentList,
    AssignmentOut,
    TaskBatchCreate,
    TaskBatchOut,
    TaskCreate,
    TaskList,
    TaskOut,
    TaskStatusName,
)

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TaskOut)
async def submit_task(body: TaskCreate, request: Request, principal: ClientDep) -> Response:
    # The busiest route: it reads what it needs from the app's state instead of a dependency each (FastAPI
    # resolves every dependency on every request; they were a tenth of a submit's CPU).
    state = request.app.state
    intake: Intake = state.runtime.intake
    header = request.headers.get("traceparent")
    server = tracing.SERVER
    if server is None:  # tracing off: the client's context is stored and passed on to the agent as it is
        # The body's traceparent (checked) wins over the header's (ignored when invalid, per W3C).
        client = tracing.client_traceparent(body.traceparent or header)
        row = submit.row_of(
            body, state.settings, owner=Owner.of(principal), session_id=None, session_key=None,
            traceparent=client,
        )  # fmt: skip
        task, created = await intake.submit(row)  # concurrent submits share one statement (group commit)
    else:
        with server.submit(body.traceparent, header, body.type) as span:
            row = submit.row_of(
                body, state.settings, owner=Owner.of(principal), session_id=None, session_key=None,
                traceparent=server.traceparent(span),
            )  # fmt: skip
            task, created = await intake.submit(row)
            server.submitted(span, task.id, task.status, created)
    if created:
        state.runtime.metrics.tasks_submitted.labels(task.type).inc()
    if task.status == "pending":  # not leased at submit: this replica's dispatcher now, NOTIFY the others
        signals: Signals = state.runtime.signals
        signals.work_available()
    return json_response(
        task,
        # The same idempotency key: the same task, 200.
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        headers={"Location": f"/api/v1/tasks/{task.id}"},
    )


@router.post(":batch", status_code=status.HTTP_201_CREATED, response_model=TaskBatchOut)
async def submit_batch(
    body: TaskBatchCreate,
    request: Request,
    maker: MakerDep,
    settings: SettingsDep,
    signals: SignalsDep,
    metrics: MetricsDep,
    principal: ClientDep,
) -> Response:
    header = request.headers.get("traceparent")
    server = tracing.SERVER
    bodies = [spec.traceparent for spec in body.tasks]
    if server is None:
        client = tracing.client_traceparent(header)
        results = await submit.submit_batch(
            engine_of(maker), settings, body.tasks, owner=Owner.of(principal),
            traceparents=[tracing.client_traceparent(own) if own else client for own in bodies],
        )  # fmt: skip
    else:  # a submit span per task: each task is in its own client's trace
        with server.submit_batch(bodies, header, [spec.type for spec in body.tasks]) as spans:
            results = await submit.submit_batch(
                engine_of(maker), settings, body.tasks, owner=Owner.of(principal),
                traceparents=[server.traceparent(span) for span in spans],
            )  # fmt: skip
            for span, (task, created) in zip(spans, results, strict=True):
                server.submitted(span, task.id, task.status, created)
    for task, created in results:
        if created:
            metrics.tasks_submitted.labels(task.type).inc()
    signals.work_available()
    return json_response(
        TaskBatchOut(tasks=[task for task, _ in results]), status_code=status.HTTP_201_CREATED
    )


@router.get("", response_model=TaskList)
async def list_tasks(
    session: SessionDep,
    principal: ClientDep,
    status: TaskStatusName | None = None,
    type: str | None = None,
    agent_id: str | None = None,
    session_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TaskList:
    tasks, next_cursor = await service.list_tasks(
        session,
        viewer=principal,
        status=status,
        task_type=type,
        agent_id=agent_id,
        session_id=session_id,
        cursor=cursor,
        limit=limit,
    )
    return TaskList(items=[service.to_out(task) for task in tasks], next_cursor=next_cursor)


@router.get("/{task_id}", response_model=TaskOut)
async def get_task(
    task_id: uuid.UUID,
    maker: MakerDep,
    signals: SignalsDep,
    principal: ClientDep,
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for a terminal state.")] = 0,
) -> TaskOut:
    task = await watch.wait_until_terminal(maker, signals, task_id, wait, viewer=principal)
    async with maker() as session:  # only a pending task reads anything more: why it waits
        return await waiting.view(session, task, fallback_after=settings.fallback_after)


@router.get("/{task_id}/events")
async def task_events(
    task_id: uuid.UUID,
    request: Request,
    maker: MakerDep,
    signals: SignalsDep,
    principal: ClientDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    after = resume_after(request, last_event_id)
    # A 404 (no such task, or not this key's) must come before the stream starts; who owns a task never
    # changes, so the stream itself need not check again.
    await watch.ensure_task_exists(maker, task_id, viewer=principal)
    return EventSourceResponse(watch.event_stream(maker, signals, task_id, after), ping=15)


@router.post("/{task_id}/cancel", response_model=TaskOut)
async def cancel_task(
    task_id: uuid.UUID, session: SessionDep, signals: SignalsDep, metrics: MetricsDep, principal: ClientDep
) -> TaskOut:
    task = await service.cancel_task(session, task_id, viewer=principal)
    signals.task_changed(task.id)
    metrics.tasks_finished.labels(task.type, task.status).inc()
    return service.to_out(task)


@router.get("/{task_id}/assignments", response_model=AssignmentList)
async def task_assignments(task_id: uuid.UUID, session: SessionDep, principal: ClientDep) -> AssignmentList:
    assignments = await service.list_assignments(session, task_id, viewer=principal)
    return AssignmentList(items=[AssignmentOut.model_validate(a) for a in assignments])
