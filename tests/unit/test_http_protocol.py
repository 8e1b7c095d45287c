"""The lighter WebSocket protocol: a socket served by it keeps neither an instance dict nor the handshake's
headers (the ASGI scope keeps its own), and works as uvicorn's."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import uvicorn
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from app.http_protocol import LeanWebSocketProtocol


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


async def test_a_socket_keeps_no_instance_dict_nor_the_handshake_headers_and_works_as_uvicorns() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        seen["headers"] = list(scope["headers"])
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo:" + message["text"]})
        seen["last"] = await receive()

    config = uvicorn.Config(app, ws=LeanWebSocketProtocol, log_config=None, ws_per_message_deflate=False)
    config.load()
    protocol = LeanWebSocketProtocol(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    key = base64.b64encode(b"0123456789abcdef").decode()
    protocol.data_received(
        (
            "GET /ws/agents HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer k\r\n\r\n"
        ).encode()
    )
    for _ in range(20):
        await asyncio.sleep(0)
    response = transport.take()
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: " in response
    assert (b"Authorization", b"Bearer k") in seen["headers"]
    assert protocol.scope["headers"] == seen["headers"]  # the scope keeps its copy
    assert len(protocol.request.headers) == 0
    assert len(protocol.response.headers) == 0
    assert vars(protocol) == {}

    protocol.data_received(Frame(Opcode.TEXT, b"hi").serialize(mask=True))
    for _ in range(20):
        await asyncio.sleep(0)
    assert transport.take() == Frame(Opcode.TEXT, b"echo:hi").serialize(mask=False)
    assert transport.reading  # the app took the message: reading resumed

    protocol.connection_lost(None)
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen["last"]["type"] == "websocket.disconnect"
