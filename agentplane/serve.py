"""`agentplane serve`: migrate, then run one replica, or N replica processes on one listening socket.

Replicas already share a fleet through PostgreSQL (DESIGN section 9), so using a many-core host is a matter
of running several: `--workers N` binds the port once, here, and starts N processes that accept on the same
socket, each a replica with its own id (`<replica id>/<index>`, stable across restarts so a restarted worker
recovers its previous incarnation's agents and leases at once). A worker that dies is started again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from app.config import Settings

logger = logging.getLogger("agentplane.serve")

GC_THRESHOLDS = (20_000, 20, 100)  # young, middle, old: see tune_gc
RESTART_DELAY = 1.0  # seconds before a worker that died is started again


def tune_gc() -> None:
    # CPython's default thresholds (700, 10, 10) run a full collection whenever the heap has grown by a
    # quarter: with 10,000 agents connected each one traversed the whole heap for 2-3 s, dozens of times while
    # the fleet connected, stalling every socket (ping RTT p99 2.5 s) and taking a fifth of the CPU. Rarer,
    # larger young collections keep the pauses under ~0.5 s (docs/performance.md, finding 8).
    gc.set_threshold(*GC_THRESHOLDS)


def uvicorn_config(settings: Settings) -> Any:
    import uvicorn

    from app.http_protocol import GuardedHttpProtocol, LeanWebSocketProtocol
    from app.main import create_app

    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        # Oversized frames are refused by the gateway with an `error` frame; only far larger ones are cut off
        # by the socket layer (close 1009).
        ws_max_size=max(16 * 1024 * 1024, settings.max_message_bytes * 4),
        ws_per_message_deflate=False,
        # uvicorn's sans-I/O WebSocket protocol, lighter per open socket (app/http_protocol.py).
        ws=LeanWebSocketProtocol,
        timeout_graceful_shutdown=10,
        # Read limits uvicorn lacks (slowloris, slow bodies, silent connections): app/http_protocol.py.
        http=GuardedHttpProtocol.configured(
            header_timeout=settings.http_header_timeout, body_timeout=settings.http_body_timeout
        ),
        timeout_keep_alive=max(1, round(settings.http_keepalive_timeout)),
    )


class QuietServer:
    """uvicorn's server, but Ctrl-C/SIGTERM end it gracefully without re-raising the signal afterwards
    (the re-raise would skip the embedded Postgres's clean stop with a traceback)."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                previous = {
                    sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
                }
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                # Agents hear 4010 ("connect to another replica") before uvicorn closes every socket with
                # 1012; new connections are refused first, so they do not come back here.
                for server in self.servers:
                    server.close()
                runtime = getattr(getattr(self.config.app, "state", None), "runtime", None)
                if runtime is not None:
                    with contextlib.suppress(Exception):
                        await runtime.goodbye()
                await super().shutdown(sockets)

        self.server = Server(config)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        self.server.run(sockets=sockets)


def serve(settings: Settings, workers: int, on_listening: Callable[[], None] | None = None) -> None:
    """Run until SIGINT or SIGTERM. ``settings.database_url`` is set (the database is migrated).

    The port is bound, and the replica id checked, before any replica starts: a second `agentplane serve`
    on a port in use, or with the id of a live replica, stops here with one line, having touched nothing.
    ``on_listening`` runs once the port is bound."""
    ids = [settings.replica_id] if workers <= 1 else [worker_id(settings, i) for i in range(workers)]
    _refuse_live_ids(settings, ids)
    if workers <= 1:
        listener = _bind(settings.host, settings.port)
        if on_listening is not None:
            on_listening()
        try:
            QuietServer(uvicorn_config(settings)).run(sockets=[listener])
        finally:
            listener.close()
        return
    _Supervisor(settings, workers, on_listening).run()


def worker_id(settings: Settings, index: int) -> str:
    return f"{settings.replica_id}/{index}"


def _refuse_live_ids(settings: Settings, ids: list[str]) -> None:
    import asyncio

    from app.dispatch.bus import asyncpg_dsn
    from app.replicas.identity import is_in_use

    assert settings.database_url is not None
    dsn = asyncpg_dsn(settings.database_url)

    async def live() -> list[str]:
        return [replica_id for replica_id in ids if await is_in_use(dsn, replica_id)]

    in_use = asyncio.run(live())
    if in_use:
        print(
            f"agentplane: replica id {in_use[0]!r} is in use by a live process; stop it, or start this one "
            "with another AGENTPLANE_REPLICA_ID or port",
            file=sys.stderr,
        )
        raise SystemExit(1)


def _worker(settings: Settings, listener: socket.socket) -> None:
    """One replica process: the same server, accepting on the socket the supervisor bound."""
    from app.logs import configure_logging

    tune_gc()
    configure_logging(settings.log_level, settings.log_format)
    QuietServer(uvicorn_config(settings)).run(sockets=[listener])


class _Supervisor:
    def __init__(self, settings: Settings, workers: int, on_listening: Callable[[], None] | None) -> None:
        self.settings = settings
        self.workers = workers
        self.on_listening = on_listening
        self.stopping = False
        self.context = multiprocessing.get_context("spawn")  # a clean interpreter each: no forked loop

    def run(self) -> None:
        listener = _bind(self.settings.host, self.settings.port)
        if self.on_listening is not None:
            self.on_listening()
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        processes: dict[int, multiprocessing.process.BaseProcess] = {}
        try:
            for index in range(self.workers):
                processes[index] = self._start(index, listener)
            while not self.stopping:
                wait([process.sentinel for process in processes.values()], timeout=0.5)
                for index, process in list(processes.items()):
                    if not process.is_alive() and not self.stopping:
                        logger.error("worker %d exited with %s; starting it again", index, process.exitcode)
                        time.sleep(RESTART_DELAY)
                        processes[index] = self._start(index, listener)
        finally:
            for process in processes.values():
                if process.is_alive():
                    process.terminate()  # SIGTERM: the worker shuts down gracefully
            for process in processes.values():
                process.join(timeout=15)
                if process.is_alive():
                    process.kill()
            listener.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, index: int, listener: socket.socket) -> multiprocessing.process.BaseProcess:
        replica = self.settings.model_copy(update={"replica_id": worker_id(self.settings, index)})
        process = self.context.Process(target=_worker, args=(replica, listener), name=f"agentplane-{index}")
        process.start()
        return process

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True


def _bind(host: str, port: int) -> socket.socket:
    """Bind once, before any worker starts: a port already in use fails here, and nothing else runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        print(f"agentplane: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from None
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener
