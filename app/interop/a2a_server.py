"""The fleet as one A2A agent (a2a-sdk 1.x): its Agent Card, whose skills are the fleet's live capabilities,
and JSON-RPC at /a2a/jsonrpc (A2A 1.0, and 0.3 on the same endpoint through the SDK's adapter).

The SDK's request handler keeps tasks in a task store of its own and runs an executor per message; ours
instead answers every method from our tasks (app.interop.fleet), so the A2A task is our task, on every
replica, with our routing, leases and retries behind it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    HTTPAuthSecurityScheme,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import (
    A2AError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.errors import AppError, Conflict, InvalidInput, NotFound
from app.interop.a2a_mapping import (
    result_artifact,
    status_event,
    status_text,
    submission_of,
    task_id_of,
    task_of,
)
from app.interop.auth import principal_of, resource_url
from app.interop.fleet import Fleet, parse
from app.interop.paths import A2A_JSONRPC
from app.security import Principal
from app.tasks.schemas import TaskCreate
from app.tasks.states import TERMINAL

logger = logging.getLogger(__name__)

CARD_TTL = 2.0  # seconds the public card's skills are reused before the registry is read again
SEND_WAIT = 60.0  # seconds a blocking SendMessage waits before answering with the task still open

P = ParamSpec("P")
R = TypeVar("R")


def _a2a_error(exc: AppError) -> A2AError:
    if isinstance(exc, NotFound):
        return TaskNotFoundError(exc.detail)
    if isinstance(exc, Conflict):
        return TaskNotCancelableError(exc.detail)
    if isinstance(exc, InvalidInput):
        return InvalidParamsError(exc.detail)
    return InternalError(exc.detail)


def answers(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Our errors as A2A errors, with their sentence as the message."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except AppError as exc:
            raise _a2a_error(exc) from None

    return wrapper


class PrincipalContextBuilder(DefaultServerCallContextBuilder):
    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["principal"] = principal_of(request.scope)
        return context


def _viewer(context: ServerCallContext) -> Principal:
    principal: Principal = context.state["principal"]
    return principal


class FleetHandler(RequestHandler):
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def _submit(self, params: SendMessageRequest, context: ServerCallContext) -> Task:
        skills = {item.name for item in (await self.fleet.capabilities()).items if item.active_agents}
        spec = parse(TaskCreate, submission_of(params, skills))
        return task_of(await self.fleet.submit(_viewer(context), spec))

    @answers
    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        task = await self._submit(params, context)
        if params.configuration.return_immediately:
            return task
        return task_of(await self.fleet.task(_viewer(context), task_id_of(task.id), wait=SEND_WAIT))

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        try:
            task = await self._submit(params, context)
        except AppError as exc:
            raise _a2a_error(exc) from None
        yield task
        async for event in self._follow(task.id, context):
            yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        try:
            task = await self.fleet.task(_viewer(context), task_id_of(params.id))
        except AppError as exc:
            raise _a2a_error(exc) from None
        yield task_of(task)
        if task.status not in TERMINAL:
            async for event in self._follow(str(task.id), context):
                yield event

    async def _follow(self, task_id: str, context: ServerCallContext) -> AsyncIterator[Event]:
        """Each progress report and transition as a status update; a result as the artifact, before the
        final status."""
        viewer = _viewer(context)
        async for event in self.fleet.follow(viewer, task_id_of(task_id)):
            data = event.data if isinstance(event.data, dict) else {}
            if event.kind == "progress":
                value = data.get("progress")
                progress = float(value) if isinstance(value, int | float) else None
                yield status_event(task_id, "running", text=data.get("message"), progress=progress)
            elif event.kind == "transition" and event.to_status in TERMINAL:
                final = await self.fleet.task(viewer, task_id_of(task_id))
                if final.status == "succeeded":
                    artifact = result_artifact(final.result)
                    yield TaskArtifactUpdateEvent(
                        task_id=task_id, context_id=task_id, artifact=artifact, last_chunk=True
                    )
                yield status_event(task_id, final.status, text=status_text(final) or event.reason)
            elif event.kind == "transition" and event.to_status:
                yield status_event(task_id, event.to_status)

    @answers
    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        return task_of(await self.fleet.task(_viewer(context), task_id_of(params.id)))

    @answers
    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        return task_of(await self.fleet.cancel(_viewer(context), task_id_of(params.id)))

    @answers
    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        if params.context_id or params.status or params.HasField("status_timestamp_after"):
            raise InvalidParamsError("tasks can be listed by page only (no contextId, status or time filter)")
        size = params.page_size or 50
        if not 1 <= size <= 500:
            raise InvalidParamsError(f"pageSize must be between 1 and 500 (got {size})")
        tasks, cursor = await self.fleet.list_tasks(
            _viewer(context), cursor=params.page_token or None, limit=size
        )
        return ListTasksResponse(
            tasks=[task_of(task) for task in tasks], next_page_token=cursor or "", page_size=size
        )

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError


def dispatcher(fleet: Fleet) -> JsonRpcDispatcher:
    return JsonRpcDispatcher(FleetHandler(fleet), PrincipalContextBuilder(), enable_v0_3_compat=True)


def card_route(fleet: Fleet) -> Callable[[Request], Awaitable[JSONResponse]]:
    live: list[tuple[float, list[str]]] = []  # (read at, the capabilities with an active agent)

    async def agent_card(request: Request) -> JSONResponse:
        """The card: its skills are the capabilities of the agents active now. It is public (A2A discovery),
        so the capabilities are read at most once per CARD_TTL seconds, whoever asks how often."""
        url = resource_url(request, A2A_JSONRPC)
        now = time.monotonic()
        if not live or now - live[0][0] > CARD_TTL:
            index = await fleet.capabilities()
            live[:] = [(now, [item.name for item in index.items if item.active_agents])]
        skills = [
            AgentSkill(
                id=name,
                name=name,
                tags=[name],
                description=f"Tasks needing {name}, routed to a capable agent.",
            )
            for name in live[0][1]
        ]
        bearer = SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="bearer", description="An Agentplane API key with the client scope."
            )
        )
        card = AgentCard(
            name="Agentplane",
            description="A fleet of AI agents: each message becomes a task routed to a capable agent "
            "(message.metadata.capability names the skill).",
            version="0.1.0",
            supported_interfaces=[
                AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
                AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3"),
            ],
            capabilities=AgentCapabilities(streaming=True, push_notifications=False),
            security_schemes={"bearer": bearer},
            security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
            default_input_modes=["application/json", "text/plain"],
            default_output_modes=["application/json"],
            skills=skills,
        )
        return JSONResponse(agent_card_to_dict(card))

    return agent_card
