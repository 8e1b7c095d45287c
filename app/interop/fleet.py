"""What the MCP tools and the A2A handler do to the fleet: the same services the REST routes call, in-process,
as the caller's principal (its ownership rules included). Each call opens its own short session.

Errors stay ours (app.errors); each protocol turns them into its own kind of answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import tracing
from app.agents import queries
from app.agents.schemas import AgentList, CapabilityIndex, RegistryMetrics
from app.collab import service as collab_service
from app.collab import watch as collab_watch
from app.collab.schemas import SessionCreate, SessionOut
from app.config import Settings
from app.db.models import TaskEvent
from app.errors import AppError, InvalidInput
from app.ownership import Owner
from app.security import Principal
from app.signals import Signals
from app.tasks import service, submit, watch
from app.tasks.intake import Intake
from app.tasks.schemas import TaskCreate, TaskOut
from app.tasks.states import TERMINAL
from app.usage import service as usage_service
from app.usage.schemas import UsageGroup, UsageReport

POLL = watch.POLL  # seconds between looks at a task's events when no local signal arrives

Progress = Callable[[float, str | None], Awaitable[None]]


def parse(model: type[TaskCreate] | type[SessionCreate], data: dict[str, Any]) -> Any:
    """``data`` as ``model``, or InvalidInput naming each bad field in a sentence."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(part) for part in err["loc"]) or "body",
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors()
        ]
        detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
        raise InvalidInput(detail, errors=errors) from None


class Fleet:
    def __init__(self, state: Any) -> None:
        self._state = (
            state  # the FastAPI app's state: the runtime and the engine exist once the lifespan runs
        )

    @property
    def settings(self) -> Settings:
        settings: Settings = self._state.settings
        return settings

    @property
    def maker(self) -> async_sessionmaker[AsyncSession]:
        maker: async_sessionmaker[AsyncSession] = self._state.sessionmaker
        return maker

    @property
    def signals(self) -> Signals:
        signals: Signals = self._state.runtime.signals
        return signals

    # Tasks

    async def submit(
        self, viewer: Principal, spec: TaskCreate, *, task_id: uuid.UUID | None = None
    ) -> TaskOut:
        """Like POST /api/v1/tasks (the same intake, so the same placement); ``task_id`` names the task."""
        row = submit.row_of(
            spec,
            self.settings,
            owner=Owner.of(viewer),
            session_id=None,
            session_key=None,
            traceparent=tracing.client_traceparent(spec.traceparent),
        )
        if task_id is not None:
            row["id"] = task_id
        intake: Intake = self._state.runtime.intake
        task, created = await intake.submit(row)
        if created:
            self._state.runtime.metrics.tasks_submitted.labels(task.type).inc()
        if task.status == "pending":
            self.signals.work_available()
        return task

    async def task(self, viewer: Principal, task_id: uuid.UUID, *, wait: float = 0) -> TaskOut:
        task = await watch.wait_until_terminal(self.maker, self.signals, task_id, wait, viewer=viewer)
        return service.to_out(task)

    async def list_tasks(
        self, viewer: Principal, *, cursor: str | None, limit: int
    ) -> tuple[list[TaskOut], str | None]:
        async with self.maker() as session:
            tasks, next_cursor = await service.list_tasks(
                session, viewer=viewer, status=None, task_type=None, agent_id=None, session_id=None,
                cursor=cursor, limit=limit,
            )  # fmt: skip
        return [service.to_out(task) for task in tasks], next_cursor

    async def cancel(self, viewer: Principal, task_id: uuid.UUID) -> TaskOut:
        async with self.maker() as session:
            task = await service.cancel_task(session, task_id, viewer=viewer)
        self.signals.task_changed(task.id)
        return service.to_out(task)

    async def events(self, viewer: Principal, task_id: uuid.UUID, *, after: int = 0) -> list[TaskEvent]:
        async with self.maker() as session:
            await service.get_task(session, task_id, viewer=viewer)  # 404 unless the viewer may see it
            return await service.events_after(session, task_id, after)

    async def follow(self, viewer: Principal, task_id: uuid.UUID) -> AsyncIterator[TaskEvent]:
        """Every event of the task, as it happens, until its terminal transition."""
        await watch.ensure_task_exists(self.maker, task_id, viewer=viewer)
        after = 0
        while True:
            async with self.maker() as session:
                events = await service.events_after(session, task_id, after)
            for event in events:
                after = event.id
                yield event
                if event.kind == "transition" and event.to_status in TERMINAL:
                    return
            if not events:
                await self.signals.wait_task(task_id, POLL)

    async def wait(
        self, viewer: Principal, task_id: uuid.UUID, seconds: float, on_progress: Progress
    ) -> TaskOut:
        """The task once terminal or after ``seconds``, whichever is first; each progress event the agent
        reports meanwhile goes to ``on_progress``."""

        async def follow_progress() -> None:
            with contextlib.suppress(AppError):  # the wait below reports it
                async for event in self.follow(viewer, task_id):
                    if event.kind == "progress" and isinstance(event.data, dict):
                        value = event.data.get("progress")
                        if isinstance(value, int | float):
                            await on_progress(float(value), event.data.get("message"))

        follower = asyncio.create_task(follow_progress())
        try:
            task = await watch.wait_until_terminal(self.maker, self.signals, task_id, seconds, viewer=viewer)
            if task.status in TERMINAL:
                # The last progress events may still be on their way to the client: let the follower end.
                await asyncio.wait({follower}, timeout=POLL * 2)
            return service.to_out(task)
        finally:
            follower.cancel()

    # Sessions

    async def start_session(self, viewer: Principal, body: SessionCreate) -> SessionOut:
        async with self.maker() as session:
            return await collab_service.create_session(
                session,
                self.settings,
                body,
                owner=Owner.of(viewer),
                signals=self.signals,
                metrics=self._state.metrics,
            )

    async def session(self, viewer: Principal, session_id: uuid.UUID, *, wait: float = 0) -> SessionOut:
        return await collab_watch.wait_for_end(self.maker, session_id, wait, viewer=viewer)

    # The registry and usage

    async def agents(self, *, capability: str | None, status: str | None, limit: int) -> AgentList:
        async with self.maker() as session:
            return await queries.list_agents(
                session, capability=capability, model=None, status=status, cursor=None, limit=limit
            )

    async def capabilities(self) -> CapabilityIndex:
        async with self.maker() as session:
            return await queries.capability_index(session)

    async def registry_metrics(self) -> RegistryMetrics:
        async with self.maker() as session:
            return await queries.registry_metrics(session)

    async def usage(self, viewer: Principal, *, group_by: UsageGroup, since: datetime | None) -> UsageReport:
        async with self.maker() as session:
            return await usage_service.usage(session, viewer=viewer, group_by=group_by, since=since)
