"""`python -m bench.echo_client`: the client side of the ws-echo baseline.

Opens --connections sockets, waits for the shared start instant (wall clock, so several processes run the
same window), then on every socket sends a frame the size of an `assign` and waits for its echo, over and
over until the window ends. Writes {"round_trips": N, "seconds": S, "rtt_ms": [sample], "errors": N}."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from bench.agents import run

# Shaped like an assign frame (ids, type, payload, deadline): the baseline moves the same bytes.
FRAME = orjson.dumps(
    {
        "type": "assign",
        "assignment_id": "5b0f6c1e-8f34-4a47-9d3e-0c6c4a1d2e11",
        "task_id": "0f8e8a4c-77c5-4d1e-b1a2-6d0b1f0c9a3e",
        "task_type": "bench",
        "payload": {"i": 12345},
        "timeout": 300.0,
        "deadline": "2026-11-26T12:05:00Z",
        "attempt": 1,
    }
).decode()
_RTT_SAMPLE = 20_000  # round-trip times kept per process, reservoir-sampled


class Tally:
    def __init__(self) -> None:
        self.round_trips = 0
        self.errors = 0
        self.rtt_ms: list[float] = []

    def add(self, rtt_ms: float) -> None:
        self.round_trips += 1
        if len(self.rtt_ms) < _RTT_SAMPLE:
            self.rtt_ms.append(rtt_ms)
        elif (slot := random.randrange(self.round_trips)) < _RTT_SAMPLE:
            self.rtt_ms[slot] = rtt_ms


async def _ping_pong(ws: ClientConnection, until: float, tally: Tally) -> None:
    try:
        while (now := time.perf_counter()) < until:
            await ws.send(FRAME)
            await ws.recv()
            tally.add((time.perf_counter() - now) * 1000)
    except WebSocketException:
        tally.errors += 1


async def drive(url: str, connections: int, start_at_ns: int, seconds: float) -> dict[str, Any]:
    sockets = await asyncio.gather(
        *(connect(url, compression=None, max_size=16 * 1024 * 1024) for _ in range(connections))
    )
    tally = Tally()
    try:
        await asyncio.sleep(max(0.0, (start_at_ns - time.time_ns()) / 1e9))
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(_ping_pong(ws, started + seconds, tally) for ws in sockets)), seconds + 30
        )
        elapsed = time.perf_counter() - started
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
    return {
        "round_trips": tally.round_trips,
        "seconds": elapsed,
        "rtt_ms": tally.rtt_ms,
        "errors": tally.errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_client")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--start-at-ns", type=int, required=True, help="time.time_ns() to start at")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run(drive(args.url, args.connections, args.start_at_ns, args.seconds))
    args.out.write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
