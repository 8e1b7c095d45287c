"""The MCP server's tools and resources: the fleet for an LLM client (docs/interop.md lists them).

Each runs as the API key of the HTTP request that carried the call (app.interop.auth), through
app.interop.fleet. A failure is one readable sentence (``ToolError``), never a traceback.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import orjson
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import BaseModel, Field

from app.agents.schemas import AgentList, AgentStatusName, RegistryMetrics
from app.collab.schemas import SessionCreate, SessionOut
from app.errors import AppError
from app.interop.auth import principal_of
from app.interop.fleet import Fleet, parse
from app.security import Principal
from app.tasks.schemas import TaskCreate, TaskOut
from app.tasks.states import TERMINAL
from app.usage.schemas import Since, UsageGroup, UsageReport

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

MAX_WAIT = 600.0  # seconds a tool call may wait; an MCP client's own request timeout is usually shorter


class TaskResult(BaseModel):
    task_id: uuid.UUID
    status: str
    done: bool = Field(description="True once the task is succeeded, failed, cancelled or timed_out.")
    result: Any = Field(description="The agent's output, once succeeded.")
    error: dict[str, Any] | None
    agent_id: str | None
    attempt: int
    note: str | None = Field(default=None, description="What to do next, when the task is still open.")

    @classmethod
    def of(cls, task: TaskOut) -> TaskResult:
        done = task.status in TERMINAL
        note = None if done else f"still {task.status}: call get_task with task_id {task.id} (wait_s to wait)"
        return cls(
            task_id=task.id, status=task.status, done=done, result=task.result, error=task.error,
            agent_id=task.agent_id, attempt=task.attempt, note=note,
        )  # fmt: skip


def _principal(ctx: Context) -> Principal:
    request = ctx.request_context.request
    return principal_of(request.scope)  # type: ignore[union-attr]


def sentences(tool: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Our errors become the tool's error text (their detail is written for people); anything else is logged
    and answered with a sentence that reveals nothing."""

    @functools.wraps(tool)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await tool(*args, **kwargs)
        except AppError as exc:
            raise ToolError(exc.detail) from None
        except Exception:
            logger.exception("MCP tool %s failed", tool.__name__)
            raise ToolError(
                f"{tool.__name__} failed on the server; try again, or see the server's log"
            ) from None

    return wrapper


def add_tools(server: MCPServer[Any], fleet: Fleet) -> None:
    @server.tool(description="The fleet's agents, optionally only those with a capability or a status.")
    @sentences
    async def list_agents(
        capability: str | None = None,
        status: AgentStatusName | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
    ) -> AgentList:
        return await fleet.agents(capability=capability, status=status, limit=limit)

    @server.tool(
        description="Submit a task to the fleet: it is routed to an agent with every capability. With wait "
        "(the default) the call reports the agent's progress and returns the result; if timeout_s runs out "
        "first, it returns the task id to poll with get_task."
    )
    @sentences
    async def submit_task(
        type: Annotated[str, Field(description="The task type the agent's handler serves.")],
        capabilities: Annotated[list[str], Field(description="Every one is required of the agent.")],
        ctx: Context,
        payload: dict[str, Any] | None = None,
        wait: bool = True,
        timeout_s: Annotated[float, Field(gt=0, le=MAX_WAIT, description="How long to wait.")] = 60.0,
        priority: Annotated[int, Field(ge=-1000, le=1000)] = 0,
        idempotency_key: str | None = None,
    ) -> TaskResult:
        viewer = _principal(ctx)
        body: dict[str, Any] = {"type": type, "capabilities": capabilities, "payload": payload or {}}
        body |= {"priority": priority} | ({"idempotency_key": idempotency_key} if idempotency_key else {})
        task = await fleet.submit(viewer, parse(TaskCreate, body))
        if not wait or task.status in TERMINAL:
            return TaskResult.of(task)

        async def progress(value: float, message: str | None) -> None:
            await ctx.report_progress(value, 1.0, message)

        return TaskResult.of(await fleet.wait(viewer, task.id, timeout_s, progress))

    @server.tool(description="A task's status and result; wait_s waits for it to finish.")
    @sentences
    async def get_task(
        task_id: uuid.UUID, ctx: Context, wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT)] = 0
    ) -> TaskResult:
        return TaskResult.of(await fleet.task(_principal(ctx), task_id, wait=wait_s))

    @server.tool(description="Cancel an open task; its agent is told to stop.")
    @sentences
    async def cancel_task(task_id: uuid.UUID, ctx: Context) -> TaskResult:
        return TaskResult.of(await fleet.cancel(_principal(ctx), task_id))

    @server.tool(
        description="Start a collaboration session: map_reduce (params.split_field, chunk_size, reduce), "
        "consensus (participants answer until they agree) or chain (params.steps). Read it with get_session."
    )
    @sentences
    async def start_session(
        strategy: Literal["map_reduce", "consensus", "chain"],
        task_type: str,
        ctx: Context,
        capabilities: list[str] | None = None,
        payload: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        participant_capabilities: list[str] | None = None,
        participant_agent_ids: list[str] | None = None,
        participant_count: int | None = None,
        max_cost: float | None = None,
    ) -> SessionOut:
        task = {"type": task_type, "capabilities": capabilities or [], "payload": payload or {}}
        body: dict[str, Any] = {"strategy": strategy, "task": task, "params": params or {}}
        if participant_capabilities is not None or participant_agent_ids is not None:
            participants = {"capabilities": participant_capabilities, "agent_ids": participant_agent_ids}
            if participant_count is not None:
                participants["count"] = participant_count  # type: ignore[assignment]
            body["participants"] = {k: v for k, v in participants.items() if v is not None}
        if max_cost is not None:
            body["budget"] = {"max_cost": max_cost}
        return await fleet.start_session(_principal(ctx), parse(SessionCreate, body))

    @server.tool(description="A collaboration session, with its result once it ends; wait_s waits for that.")
    @sentences
    async def get_session(
        session_id: uuid.UUID, ctx: Context, wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT)] = 0
    ) -> SessionOut:
        return await fleet.session(_principal(ctx), session_id, wait=wait_s)

    @server.tool(description="The registry in numbers: agents by model and status, distinct capabilities.")
    @sentences
    async def registry_metrics() -> RegistryMetrics:
        return await fleet.registry_metrics()

    @server.tool(description="Tokens and cost of the tasks this key may see, by model, agent or task type.")
    @sentences
    async def usage(ctx: Context, group_by: UsageGroup = "model", since: Since | None = None) -> UsageReport:
        return await fleet.usage(_principal(ctx), group_by=group_by, since=since)


def add_resources(server: MCPServer[Any], fleet: Fleet) -> None:
    @server.resource(
        "agentplane://capabilities",
        name="capabilities",
        description="The capability index: each capability with the agents that offer it.",
        mime_type="application/json",
    )
    async def capabilities() -> str:
        return (await fleet.capabilities()).model_dump_json()

    @server.resource(
        "agentplane://tasks/{task_id}/events",
        name="task_events",
        description="A task's events so far: each transition and each progress report.",
        mime_type="application/json",
    )
    async def task_events(task_id: str, ctx: Context) -> str:
        try:
            events = await fleet.events(_principal(ctx), uuid.UUID(task_id))
        except ValueError:
            raise ResourceError(f"{task_id!r} is not a task id") from None
        except AppError as exc:
            raise ResourceError(exc.detail) from None
        return orjson.dumps(
            [
                {
                    "id": event.id, "kind": event.kind, "from": event.from_status, "to": event.to_status,
                    "reason": event.reason, "data": event.data, "at": event.at.isoformat(),
                }
                for event in events
            ]
        ).decode()  # fmt: skip
