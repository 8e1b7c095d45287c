"""Pure: an A2A agent in the fleet, in our terms (docs/interop.md has the tables).

Its card's skills become capabilities, an `assign` becomes an A2A message, and the events the agent streams
back (or the task it answers a poll with) become the `accept`, `progress`, `reject` and `result` frames an
SDK agent would have sent, so the gateway's channel and batcher record them unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from a2a.types.a2a_pb2 import (
    AgentCard,
    Artifact,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
)
from google.protobuf import json_format, struct_pb2

from app.gateway.protocol import Accept, Assign, Progress, Reject, Result, ResultError, Usage
from app.interop.a2a_mapping import _json_numbers

CAPABILITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")  # as `register` admits them
MAX_CAPABILITIES = 256

# What each A2A state means for the assignment; states absent here (submitted, unspecified) change nothing.
FAILED_CODES: dict[int, tuple[str, str]] = {
    TaskState.TASK_STATE_FAILED: ("a2a_failed", "the A2A agent reported the task failed"),
    TaskState.TASK_STATE_CANCELED: ("a2a_canceled", "the A2A agent cancelled the task"),
    TaskState.TASK_STATE_INPUT_REQUIRED: ("a2a_input_required", "the A2A agent asked for more input"),
    TaskState.TASK_STATE_AUTH_REQUIRED: ("a2a_auth_required", "the A2A agent asked for authorization"),
}
TERMINAL = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_REJECTED,
    *FAILED_CODES,
}


def capabilities_of(card: AgentCard) -> tuple[list[str], list[str]]:
    """The capability names a card's skills give (ids and tags, first seen first), and what was skipped."""
    names: list[str] = []
    skipped: list[str] = []
    for skill in card.skills:
        for name in (skill.id, *skill.tags):
            if name in names or name in skipped:
                continue
            if CAPABILITY_NAME.match(name) and len(names) < MAX_CAPABILITIES:
                names.append(name)
            else:
                skipped.append(name)
    return names, skipped


def message_of(assign: Assign) -> Message:
    """The A2A message for an assignment: the payload as a data part (and its `text`, when a string, as a text
    part too, for agents that read text only); the context is our task, the message id the assignment."""
    parts = [Part(data=json_format.ParseDict(assign.payload, struct_pb2.Value()))]
    text = assign.payload.get("text")
    if isinstance(text, str):
        parts.append(Part(text=text))
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "task_id": str(assign.task_id),
            "task_type": assign.task_type,
            "assignment_id": str(assign.assignment_id),
            "attempt": assign.attempt,
        }
    )
    return Message(
        message_id=str(assign.assignment_id),
        context_id=str(assign.task_id),
        role=Role.ROLE_USER,
        parts=parts,
        metadata=metadata,
    )


def _text_of(message: Message) -> str:
    return "\n".join(part.text for part in message.parts if part.WhichOneof("content") == "text")


def output_of(parts: list[Part]) -> Any:
    """Data parts that are objects merged, other data under `data`, text parts joined under `text`; a lone
    data part is the output itself."""
    data = [
        _json_numbers(json_format.MessageToDict(p.data)) for p in parts if p.WhichOneof("content") == "data"
    ]
    texts = [p.text for p in parts if p.WhichOneof("content") == "text"]
    if len(data) == 1 and not texts:
        return data[0]
    output: dict[str, Any] = {}
    others: list[Any] = []
    for item in data:
        if isinstance(item, dict):
            output |= item
        else:
            others.append(item)
    if others:
        output["data"] = others
    if texts:
        output["text"] = "\n".join(texts)
    return output


def _usage(metadata: struct_pb2.Struct) -> Usage:
    """Usage, when the agent reports it as `metadata.usage` (A2A has no field for it): else none."""
    usage = _json_numbers(json_format.MessageToDict(metadata)).get("usage")
    if not isinstance(usage, dict):
        return Usage()
    try:
        return Usage.model_validate(
            {k: usage[k] for k in ("input_tokens", "output_tokens", "cost") if k in usage}
        )
    except ValueError:
        return Usage()


Frame = Accept | Progress | Reject | Result


@dataclass
class Translation:
    """One assignment's A2A events, turned into our frames as they arrive."""

    assign: Assign
    a2a_task_id: str | None = None
    done: bool = False
    progress: float = 0.0
    _accepted: bool = False
    _reported: tuple[float, str] | None = None
    _artifacts: dict[str, Artifact] = field(default_factory=dict)

    def feed(self, event: StreamResponse) -> list[Frame]:
        kind = event.WhichOneof("payload")
        if self.done:
            return []
        if kind == "message":  # a direct answer, with no task
            return self._start() + self._finish(
                Result(
                    assignment_id=self.assign.assignment_id,
                    status="succeeded",
                    output=output_of(list(event.message.parts)),
                )
            )
        if kind == "task":
            return self.task(event.task)
        if kind == "artifact_update":
            self._artifact(event.artifact_update.artifact, append=event.artifact_update.append)
            return self._start()
        if kind == "status_update":
            update = event.status_update
            self.a2a_task_id = self.a2a_task_id or update.task_id
            return self._status(update.status, update.metadata)
        return []

    def task(self, task: Task) -> list[Frame]:
        """A task (the first event of a stream, or a poll's answer): its artifacts and its state."""
        self.a2a_task_id = task.id
        for artifact in task.artifacts:
            self._artifact(artifact, append=False)
        return self._status(task.status, task.metadata)

    def _start(self) -> list[Frame]:
        if self._accepted:
            return []
        self._accepted = True
        return [Accept(assignment_id=self.assign.assignment_id)]

    def _finish(self, frame: Frame) -> list[Frame]:
        self.done = True
        return [frame]

    def _artifact(self, artifact: Artifact, *, append: bool) -> None:
        known = self._artifacts.get(artifact.artifact_id)
        if append and known is not None:
            known.parts.extend(artifact.parts)
        else:
            kept = self._artifacts[artifact.artifact_id] = Artifact()
            kept.CopyFrom(artifact)

    def _status(self, status: TaskStatus, metadata: struct_pb2.Struct) -> list[Frame]:
        frames = self._start()
        state, text = status.state, _text_of(status.message)
        assignment_id = self.assign.assignment_id
        if state == TaskState.TASK_STATE_WORKING:
            reported = _json_numbers(json_format.MessageToDict(metadata)).get("progress")
            if isinstance(reported, int | float) and 0 <= reported <= 1:
                self.progress = float(reported)
            elif not text:
                return frames
            report = (self.progress, text[:2000])
            if report != self._reported:  # a polled task repeats its last status until it changes
                self._reported = report
                frames.append(Progress(assignment_id=assignment_id, progress=report[0], message=report[1]))
        elif state == TaskState.TASK_STATE_COMPLETED:
            parts = [part for artifact in self._artifacts.values() for part in artifact.parts]
            output = output_of(parts or list(status.message.parts))
            usage = _usage(metadata)
            frames += self._finish(
                Result(assignment_id=assignment_id, status="succeeded", output=output, usage=usage)
            )
        elif state == TaskState.TASK_STATE_REJECTED:
            frames += self._finish(
                Reject(assignment_id=assignment_id, reason=(text or "rejected by the A2A agent")[:1000])
            )
        elif state in FAILED_CODES:
            code, default = FAILED_CODES[state]
            error = ResultError(code=code, message=(text or default)[:10_000], retryable=False)
            frames += self._finish(
                Result(assignment_id=assignment_id, status="failed", error=error, usage=_usage(metadata))
            )
        return frames
