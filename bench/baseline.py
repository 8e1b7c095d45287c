"""--baseline ws-echo: the same number of client sockets, in the same number of processes, doing bare
request/response round trips against bench/echo_server.py. Run after the server under test has stopped,
so the two measurements never compete for the machine's cores."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import orjson

from bench import server as servers
from bench.procs import Child, clean_env, python_module
from bench.scenarios import split
from bench.stats import summarize

_CONNECT_LEAD = 3.0  # seconds between starting the clients and the shared start instant


def ws_echo(*, connections: int, procs: int, seconds: float, log_dir: Path) -> dict[str, Any]:
    """{"baseline_rps", "baseline_rtt_ms", "baseline_errors"} of one echo run."""
    echo, port = servers.start_echo(log_dir=log_dir)
    clients: list[Child] = []
    try:
        start_at = time.time_ns() + int(_CONNECT_LEAD * 1e9)
        outputs = []
        for number, count in enumerate(split(connections, min(procs, connections))):
            out = log_dir / f"echo-client-{number}.json"
            argv = python_module(
                "bench.echo_client",
                "--url",
                f"ws://127.0.0.1:{port}/ws/echo",
                "--connections",
                str(count),
                "--start-at-ns",
                str(start_at),
                "--seconds",
                str(seconds),
                "--out",
                str(out),
            )
            log = log_dir / f"echo-client-{number}.log"
            clients.append(Child(f"echo-client-{number}", argv, env=clean_env({}), log_path=log))
            outputs.append(out)
        for client in clients:
            if not client.wait(_CONNECT_LEAD + seconds + 60):
                raise RuntimeError(f"{client.name} did not finish:\n{client.log_tail()}")
        results = []
        for out, client in zip(outputs, clients, strict=True):
            try:
                results.append(orjson.loads(out.read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                raise RuntimeError(f"{client.name} wrote no result:\n{client.log_tail()}") from None
    finally:
        for client in clients:
            client.stop(timeout=5.0)
        with contextlib.suppress(Exception):
            echo.stop(timeout=10.0)
    round_trips = sum(int(r["round_trips"]) for r in results)
    window = max(float(r["seconds"]) for r in results)
    return {
        "baseline_rps": round(round_trips / window, 1) if window > 0 else None,
        "baseline_rtt_ms": summarize(rtt for r in results for rtt in r["rtt_ms"]),
        "baseline_errors": sum(int(r["errors"]) for r in results),
        "baseline_connections": connections,
    }
