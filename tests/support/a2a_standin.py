"""A stand-in A2A agent served by the official a2a-sdk server: it counts the words of a text, reporting its
progress as it goes, and honours CancelTask. Run as a process (`python -m tests.support.a2a_standin PORT
JOURNAL [TOKEN]`) so a test can stop it like a real remote agent going away.

Every task it starts and every CancelTask it handles is appended to JOURNAL (JSON lines), so the test reads
what the agent itself saw, not what the control plane says it sent. With TOKEN, both the card and JSON-RPC
require `Authorization: Bearer TOKEN` (credentials the control plane must present). STANDIN_STREAMING=0
serves a card without streaming (the control plane then polls the task).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn
from a2a.helpers.proto_helpers import (
    get_data_parts,
    get_text_parts,
    new_data_part,
    new_task,
    new_text_part,
)
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

STEPS = 4


class WordCounter(AgentExecutor):
    def __init__(self, journal: Path) -> None:
        self.journal = journal

    def _note(self, **entry: Any) -> None:
        with self.journal.open("a") as out:
            out.write(json.dumps(entry) + "\n")

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        assert message is not None
        data: dict[str, Any] = {}
        for part in get_data_parts(list(message.parts)):
            if isinstance(part, dict):
                data.update(part)
        # The payload as a data part; text parts only when there is none (the control plane sends both).
        lines = data.get("lines")
        text = " ".join(lines) if isinstance(lines, list) else str(data.get("text", ""))
        if not data:
            text = " ".join(get_text_parts(list(message.parts)))
        pause = float(data.get("delay_ms", 0)) / 1000 / STEPS
        task = context.current_task or new_task(
            task_id=context.task_id or "",
            context_id=context.context_id or "",
            state=TaskState.TASK_STATE_SUBMITTED,
        )
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        self._note(event="start", a2a_task=task.id, metadata=json_format.MessageToDict(message.metadata))
        for step in range(1, STEPS + 1):
            await asyncio.sleep(pause)
            await updater.update_status(
                TaskState.TASK_STATE_WORKING,
                message=updater.new_agent_message([new_text_part(f"step {step} of {STEPS}")]),
                metadata={"progress": step / STEPS},
            )
        if data.get("fail"):
            await updater.failed(updater.new_agent_message([new_text_part(f"asked to fail: {data['fail']}")]))
            return
        await updater.add_artifact([new_data_part({"words": len(text.split())})], name="count")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        self._note(event="cancel", a2a_task=context.task_id)
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()


class BearerGuard:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization", b"").decode() != f"Bearer {self.token}":
                await Response("unauthorized", status_code=401)(scope, receive, send)
                return
            if scope["method"] == "POST":
                receive, body = await _buffered(receive)
                if b"http_500" in body:  # a task whose payload asks for it: this one call answers 500
                    await Response("the stand-in was asked to fail this call", status_code=500)(
                        scope, receive, send
                    )
                    return
        await self.app(scope, receive, send)


async def _buffered(receive: Receive) -> tuple[Receive, bytes]:
    """Read the request body, and a `receive` that hands it on once, then listens as before."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = bool(message.get("more_body", False))
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Any:
        return pending.pop() if pending else await receive()

    return replay, body


def card(base_url: str) -> AgentCard:
    return AgentCard(
        name="word-counter",
        description="Counts the words of a text (an A2A stand-in for tests).",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=f"{base_url}/a2a", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=os.environ.get("STANDIN_STREAMING", "1") == "1"),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json"],
        skills=[
            AgentSkill(
                id="word-count",
                name="Word count",
                description="Counts words.",
                tags=["text", "bad tag!"],
            )
        ],
    )


def build_app(port: int, journal: Path, token: str | None = None) -> ASGIApp:
    agent_card = card(f"http://127.0.0.1:{port}")
    handler = DefaultRequestHandler(
        agent_executor=WordCounter(journal), task_store=InMemoryTaskStore(), agent_card=agent_card
    )

    async def alive(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    routes = [
        *create_agent_card_routes(agent_card),
        *create_jsonrpc_routes(handler, "/a2a"),
        Route("/alive", alive),
    ]
    app: ASGIApp = Starlette(routes=routes)
    return BearerGuard(app, token) if token else app


def main() -> None:
    port, journal = int(sys.argv[1]), Path(sys.argv[2])
    token = sys.argv[3] if len(sys.argv) > 3 else None
    uvicorn.run(build_app(port, journal, token), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
