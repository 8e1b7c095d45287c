"""`python -m bench.agents`: many SDK agents in one event loop, recording what each one executed.

The harness stops us by closing our stdin (so a harness that dies takes us with it) or by SIGTERM. We then
stop every agent and write one JSON document to --out:

    {"executions": [[task_id, assignment_id, assign_received_ns, handler_started_ns], ...],
     "pings": {agent_id: pings received}, "registered": N, "failed": N}

Times are time.time_ns(): the harness, the agents and Postgres share one machine, so the wall clock is
the one clock all three can be compared on (monotonic clocks are per process in principle).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
from websockets.asyncio.client import ClientConnection

from agentplane._sdk_link import Link
from agentplane.sdk import Agent, TaskContext
from app.gateway import protocol as wire

TASK_TYPE = "bench"
CAPABILITY = "bench"
MODEL = "bench-model"
_REGISTER_WAIT = 60.0  # seconds one agent may take to register before it counts as failed
_STOP_WAIT = 20.0  # seconds to close every socket before we give up and exit anyway

_T = TypeVar("_T")

logger = logging.getLogger("bench.agents")


class Recorder:
    """Shared by every agent of this process: one list append per event, nothing else on the hot path."""

    def __init__(self) -> None:
        self.received: dict[uuid.UUID, int] = {}  # assignment id -> when its assign frame arrived
        self.executions: list[tuple[str, str, int, int]] = []
        self.pings: dict[str, int] = {}


class BenchAgent(Agent):
    """An SDK agent that timestamps its frames. The overrides hook private SDK methods on purpose: the
    assign must be stamped where the frame is read, before the handler task is even scheduled, or a busy
    loop's scheduling delay would hide inside "dispatch latency"."""

    def __init__(self, recorder: Recorder, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder
        self.registered = asyncio.Event()
        self._pings = 0

    def _on_assign(self, frame: wire.Assign, link: Link) -> None:
        self.recorder.received[frame.assignment_id] = time.time_ns()
        super()._on_assign(frame, link)

    def _dispatch(self, raw: str | bytes, link: Link) -> None:
        # Pings are the only frames this short that name "ping"; a substring test costs nothing.
        if len(raw) < 80 and (b'"ping"' in raw if isinstance(raw, bytes) else '"ping"' in raw):
            self._pings += 1
            self.recorder.pings[self.agent_id or "?"] = self._pings
        super()._dispatch(raw, link)

    async def _await_registered(self, ws: ClientConnection) -> wire.Registered:
        frame = await super()._await_registered(ws)
        self.registered.set()
        return frame


def make_handler(recorder: Recorder, work_ms: float) -> Any:
    delay = work_ms / 1000.0

    async def handle(ctx: TaskContext) -> dict[str, int]:
        started = time.time_ns()
        received = recorder.received.pop(ctx.assignment_id, started)
        recorder.executions.append((str(ctx.task_id), str(ctx.assignment_id), received, started))
        if delay > 0:
            await asyncio.sleep(delay)
        return {"ok": 1}

    return handle


async def _start(agent: BenchAgent, gate: asyncio.Semaphore, runs: set[asyncio.Task[None]]) -> bool:
    """Connect one agent, holding a gate slot until it is registered: a bounded number of handshakes
    at once, so a 10,000-agent fleet does not stampede the server's register transactions."""
    async with gate:
        run = asyncio.create_task(agent.run())
        runs.add(run)
        waiter = asyncio.create_task(agent.registered.wait())
        await asyncio.wait({run, waiter}, timeout=_REGISTER_WAIT, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return agent.registered.is_set()


async def _stdin_closed() -> None:
    """Returns at end of file on stdin. A pipe reader on the loop, not a thread: a thread blocked in
    read() would keep asyncio.run() from returning when we are stopped by a signal instead."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    recorder = Recorder()
    handler = make_handler(recorder, args.work_ms)
    agents = []
    for index in range(args.count):
        agent = BenchAgent(
            recorder,
            url=args.url,
            key=args.key,
            model=MODEL,
            capabilities=[CAPABILITY],
            max_concurrency=args.concurrency,
            agent_id=f"{args.prefix}-{index:05d}",
        )
        agent.add_handler(TASK_TYPE, handler)
        agents.append(agent)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_stdin_closed() if args.stop_on_eof else stop.wait())
    watcher.add_done_callback(lambda _: stop.set())
    runs: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(args.connect_parallel)
    starting: asyncio.Future[list[bool]] = asyncio.gather(*(_start(agent, gate, runs) for agent in agents))
    stopped: asyncio.Future[Any] = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopped}, timeout=args.max_seconds, return_when=asyncio.FIRST_COMPLETED)
    on_time = sum(starting.result()) if starting.done() else sum(a.registered.is_set() for a in agents)
    print(f"registered {on_time}/{len(agents)} within {_REGISTER_WAIT:g} s each", file=sys.stderr, flush=True)
    with contextlib.suppress(TimeoutError):  # bounded: the harness always ends us, this is a backstop
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    starting.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(agent.stop() for agent in agents)), _STOP_WAIT)
    for task in (*runs, watcher, stopped):
        task.cancel()
    registered = sum(agent.registered.is_set() for agent in agents)  # late ones count: they are serving
    return {
        "executions": recorder.executions,
        "pings": recorder.pings,
        "registered": registered,
        "failed": len(agents) - registered,
        "slow_registrations": registered - on_time,  # registered, but later than _REGISTER_WAIT
    }


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run, on uvloop when it is installed: uvicorn picks uvloop for the server, so the agents
    get the same loop and the comparison is fair."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agents")
    parser.add_argument("--url", required=True, help="ws://host:port/ws/agents")
    parser.add_argument("--key", required=True, help="an API key with the agent scope")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True, help="agent ids are PREFIX-00000, PREFIX-00001, ...")
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--connect-parallel", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stop-on-eof", action="store_true", help="stop when stdin closes (the harness)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(serve(args))
    args.out.write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
