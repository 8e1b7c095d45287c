"""`python -m bench.floor`: what the hops of one task cost on this machine, without Agentplane's work in them.

At low rates a task's latency is mostly hops: the client's request to the server, the server's statement to
PostgreSQL and its commit, the `assign` to the agent. Each hop wakes a process on an idle core, and on a VM
that wake-up is a large part of the hop. This harness times the hops alone, paced like the `latency`
scenario (one at a time, `--rate` per second), against the same kind of server the scenarios start:

- `pg_select`: `SELECT 1` on a connection of its own to the server's PostgreSQL (one round trip);
- `pg_insert`: a one-row INSERT committed on its own (a round trip and a durable commit);
- `http_no_db`: `POST /api/v1/tasks` with a body the server refuses (422): HTTP, middleware, the key check
  and validation, no database;
- `ws_echo`: a frame the size of an `assign` to the ws-echo server (bench/echo_server.py) and back.

A single submit's dispatch (submit -> `assign` read by the agent) needs at least half an HTTP round trip, a
durable INSERT and half a WebSocket round trip; `dispatch_floor_ms` adds those medians. Prints one JSON
record (and writes it to bench/results/ unless `--no-save`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from websockets.asyncio.client import connect

from bench import server as servers
from bench.echo_client import FRAME
from bench.rawhttp import RawConnection
from bench.record import RESULTS_DIR, machine
from bench.stats import summarize


async def _paced(probe: Callable[[], Awaitable[Any]], count: int, rate: float) -> dict[str, float | None]:
    samples: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        await probe()
        samples.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - began)))
    return summarize(samples)


async def _probe(server: servers.Server, echo_port: int, count: int, rate: float) -> dict[str, Any]:
    assert server.data_dir is not None
    results: dict[str, Any] = {}
    db = await asyncpg.connect(host=str(server.data_dir / "pgdata"), user="postgres", database="agentplane")
    try:
        await db.execute("CREATE TABLE bench_floor (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        results["pg_select"] = await _paced(lambda: db.fetchval("SELECT 1"), count, rate)
        results["pg_insert"] = await _paced(
            lambda: db.execute("INSERT INTO bench_floor DEFAULT VALUES"), count, rate
        )
    finally:
        await db.close()
    # Opened just before use: the server closes a keep-alive connection idle for longer than its timeout.
    http = await RawConnection.open(server.base_url, server.admin_key)
    try:
        results["http_no_db"] = await _paced(lambda: http.post("/api/v1/tasks", b"{}"), count, rate)
    finally:
        await http.close()
    async with connect(f"ws://127.0.0.1:{echo_port}/ws/echo", max_size=None) as ws:

        async def echo() -> None:
            await ws.send(FRAME)
            await ws.recv()

        results["ws_echo"] = await _paced(echo, count, rate)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="probes per second (default 50)")
    parser.add_argument("--count", type=int, default=500, help="probes of each kind (default 500)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/floor-*.json")
    args = parser.parse_args(argv)
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="agentplane-floor-") as logs:
        server = servers.start(health_interval=3600.0, log_dir=Path(logs))
        echo, echo_port = servers.start_echo(log_dir=Path(logs))
        try:
            if server.data_dir is None:
                print("bench.floor needs the embedded PostgreSQL: unset DATABASE_URL", file=sys.stderr)
                return 2
            probes = asyncio.run(_probe(server, echo_port, args.count, args.rate))
        finally:
            echo.stop()
            server.stop()
    p50 = {name: values["p50"] or 0.0 for name, values in probes.items()}
    record = {
        "scenario": "floor",
        "rate": args.rate,
        "count": args.count,
        "probes_ms": probes,
        "dispatch_floor_ms": round(p50["http_no_db"] / 2 + p50["pg_insert"] + p50["ws_echo"] / 2, 3),
        "machine": machine(),
        "started_at": started,
    }
    text = orjson.dumps(record).decode()
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / f"floor-{started}.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
