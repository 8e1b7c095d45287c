"""Pure: our tasks as A2A tasks and events, and an A2A message as a task submission (docs/interop.md has
the table).

The A2A task is our task: its id is the task's id, its contextId too (one message makes one task; we keep
no conversation), its state follows ``STATES``, and a succeeded task's output is one artifact named
``result`` holding a data part.
"""

from __future__ import annotations

import uuid
from typing import Any

from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError
from google.protobuf import json_format, struct_pb2

from app.tasks.schemas import TaskOut

STATES: dict[str, TaskState] = {
    "pending": TaskState.TASK_STATE_SUBMITTED,
    "assigned": TaskState.TASK_STATE_SUBMITTED,
    "running": TaskState.TASK_STATE_WORKING,
    "succeeded": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "cancelled": TaskState.TASK_STATE_CANCELED,
    "timed_out": TaskState.TASK_STATE_FAILED,
}
RESULT_ARTIFACT = "result"


def task_id_of(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise TaskNotFoundError(f"no task with id {text!r}") from None


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


def agent_message(task_id: str, text: str) -> Message:
    return Message(
        message_id=str(uuid.uuid4()), task_id=task_id, context_id=task_id, role=Role.ROLE_AGENT,
        parts=[Part(text=text)],
    )  # fmt: skip


def result_artifact(result: Any) -> Artifact:
    return Artifact(artifact_id=RESULT_ARTIFACT, name=RESULT_ARTIFACT, parts=[Part(data=_value(result))])


def status_text(task: TaskOut) -> str | None:
    if task.error:
        return str(task.error.get("message") or task.error.get("code") or task.status)
    return None


def task_of(task: TaskOut) -> Task:
    task_id = str(task.id)
    status = TaskStatus(state=STATES[task.status])
    status.timestamp.FromDatetime(task.updated_at)
    if (text := status_text(task)) is not None:
        status.message.CopyFrom(agent_message(task_id, text))
    metadata: dict[str, Any] = {"type": task.type, "capabilities": list(task.capabilities)}
    metadata["status"] = task.status
    metadata |= {"attempt": task.attempt} | ({"agent_id": task.agent_id} if task.agent_id else {})
    out = Task(id=task_id, context_id=task_id, status=status, metadata=_struct(metadata))
    if task.status == "succeeded":
        out.artifacts.append(result_artifact(task.result))
    return out


def status_event(
    task_id: str, status: str, *, text: str | None = None, progress: float | None = None
) -> TaskStatusUpdateEvent:
    state = TaskStatus(state=STATES[status])
    if text:
        state.message.CopyFrom(agent_message(task_id, text))
    metadata: dict[str, Any] = {"status": status} | ({"progress": progress} if progress is not None else {})
    return TaskStatusUpdateEvent(
        task_id=task_id, context_id=task_id, status=state, metadata=_struct(metadata)
    )


def _json_numbers(value: Any) -> Any:
    """Protobuf's Struct keeps every number as a double: 3 arrives as 3.0. JSON has one number type, and
    handlers expect 3 (the REST API reads 3.0 as the integer 3 too, app.request_model.Integer)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_numbers(item) for item in value]
    return value


def submission_of(request: SendMessageRequest, skills: set[str]) -> dict[str, Any]:
    """The body of a task submission (TaskCreate's fields) from an A2A message.

    The capability is ``message.metadata.capability`` (or the request's metadata), else the only skill the
    fleet has; the task type is ``metadata.task_type``, else the capability. Data parts that are objects are
    merged into the payload; text parts are joined into ``payload.text``."""
    message = request.message
    if message.task_id:
        raise InvalidParamsError("a task takes one message: send a new message without taskId")
    metadata = {**json_format.MessageToDict(request.metadata), **json_format.MessageToDict(message.metadata)}
    capability = metadata.get("capability") or metadata.get("skill")
    if capability is None:
        if len(skills) != 1:
            raise InvalidParamsError(
                "say which capability (skill id) the task needs: message.metadata.capability"
            )
        capability = next(iter(skills))
    payload: dict[str, Any] = {}
    texts: list[str] = []
    for part in message.parts:
        kind = part.WhichOneof("content")
        if kind == "data":
            data = _json_numbers(json_format.MessageToDict(part.data))
            if not isinstance(data, dict):
                raise InvalidParamsError(
                    "a data part must hold a JSON object (it becomes the task's payload)"
                )
            payload |= data
        elif kind == "text":
            texts.append(part.text)
        else:
            raise InvalidParamsError("only text and data parts are accepted (files are not)")
    if texts:
        payload.setdefault("text", "\n".join(texts))
    body: dict[str, Any] = {"type": metadata.get("task_type", capability), "capabilities": [capability]}
    return body | {"payload": payload}
