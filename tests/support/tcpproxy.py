"""A TCP proxy a test can cut: the server talks to PostgreSQL through it, and `down()` is an outage
(connections dropped, new ones refused) without touching the database other tests share."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from sqlalchemy.engine import make_url


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, unix_path: str | None = None) -> None:
        self.target = (target_host, target_port)
        self.unix_path = unix_path  # PostgreSQL's socket file, when it listens on no TCP port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    def in_front_of(cls, database_url: str) -> TcpProxy:
        """A proxy to the PostgreSQL of ``database_url`` (TCP, or the socket file the embedded one uses)."""
        url = make_url(database_url)
        socket_dir = url.query.get("host")
        unix_path = None
        if isinstance(socket_dir, str):  # the embedded PostgreSQL listens on a socket file only
            unix_path = str(next(p for p in Path(socket_dir).glob(".s.PGSQL.*") if p.suffix != ".lock"))
        return cls(url.host or "127.0.0.1", url.port or 5432, unix_path=unix_path)

    def url_for(self, database_url: str) -> str:
        """``database_url`` reached through this proxy (started: its port is known)."""
        url = make_url(database_url)
        query = {key: value for key, value in url.query.items() if key != "host"}
        return url.set(host="127.0.0.1", port=self.port, query=query).render_as_string(hide_password=False)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def down(self) -> None:
        self._call(self._down())

    def up(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.unix_path is not None:
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.unix_path)
            else:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._copy(reader, upstream_writer), self._copy(upstream_reader, writer), return_exceptions=True
        )

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
