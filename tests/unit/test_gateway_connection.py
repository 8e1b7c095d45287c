"""One agent socket's outbox and writer: created with the first frame queued, gone once everything is sent."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from starlette.websockets import WebSocket, WebSocketState

from app.gateway.connection import Connection
from app.gateway.protocol import Assign, Ping


class FakeSocket:
    """Records what is sent; ``hold`` makes every send wait until it is set."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.application_state = WebSocketState.CONNECTED
        self.closed_with: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        await self.hold.wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED


def connect() -> tuple[Connection, FakeSocket]:
    socket = FakeSocket()
    return Connection(cast(WebSocket, socket), agent_id="a1", model="m"), socket


def assign() -> Assign:
    return Assign(
        assignment_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        task_type="t",
        payload={},
        timeout=10.0,
        deadline=datetime.now(UTC),
        attempt=1,
    )


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def idle(connection: Any) -> bool:
    return connection._outbox is None and connection._writer is None


async def test_an_idle_connection_holds_no_outbox_and_no_writer() -> None:
    connection, _ = connect()
    assert idle(connection)
    assert not hasattr(connection, "__dict__")


async def test_the_writer_and_outbox_go_once_everything_is_sent_and_come_back_for_the_next_frame() -> None:
    connection, socket = connect()
    for nonce in ("n1", "n2"):
        assert connection.send(Ping(nonce=nonce))
    await settle()
    assert len(socket.sent) == 2
    assert '"n1"' in socket.sent[0]
    assert '"n2"' in socket.sent[1]
    assert idle(connection)
    assert connection.send(Ping(nonce="n3"))
    await settle()
    assert len(socket.sent) == 3
    assert '"n3"' in socket.sent[2]
    assert idle(connection)


async def test_assigns_not_sent_when_the_socket_closes_are_undelivered() -> None:
    connection, socket = connect()
    socket.hold.clear()  # the peer stopped reading: the first frame waits in the send
    first, second = assign(), assign()
    assert connection.send(first)
    assert connection.send(second)
    await settle()
    assert connection.stalled_for(float("inf")) > 0
    undelivered = await connection.close_and_collect(4000, "bye")
    assert sorted(undelivered) == sorted([first.assignment_id, second.assignment_id])
    assert socket.sent == []
    assert not connection.send(assign())  # closed: nothing more is queued
    socket.hold.set()
    await connection.drained(1.0)
    assert socket.closed_with == (4000, "bye")


async def test_a_close_after_everything_was_sent_collects_nothing() -> None:
    connection, socket = connect()
    assert connection.send(assign())
    await settle()
    assert idle(connection)
    assert await connection.close_and_collect(1000, "bye") == []
    await connection.drained(1.0)
    assert len(socket.sent) == 1
    assert socket.closed_with == (1000, "bye")
