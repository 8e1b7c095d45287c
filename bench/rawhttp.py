"""A minimal HTTP/1.1 keep-alive client for the single-submit scenario.

httpx costs the harness about 1 ms of CPU per request; on a 2-core machine that shares its cores with the
server and PostgreSQL, a thousand single submits a second would spend a core in the client alone and the
record would measure httpx. This client writes a fixed request template and reads `Content-Length` bodies:
enough for our own JSON API on keep-alive connections, nothing more (no chunked bodies, no redirects).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit


class RawHttpError(Exception):
    pass


@dataclass
class RawResponse:
    status: int
    body: bytes


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.head = head  # "POST {path} HTTP/1.1" lines up to, not including, Content-Length

    @classmethod
    async def open(cls, base_url: str, key: str) -> RawConnection:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        head = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nConnection: keep-alive\r\n"
        ).encode()
        return cls(reader, writer, head)

    async def post(self, path: str, body: bytes) -> RawResponse:
        self.writer.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\n" + self.head
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip
        return await self._response()

    async def _response(self) -> RawResponse:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise RawHttpError(f"connection closed or bad response: {exc!r}") from None
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"transfer-encoding":
                raise RawHttpError("chunked responses are not supported by this client")
        body = await self.reader.readexactly(length) if length else b""
        return RawResponse(status, body)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
