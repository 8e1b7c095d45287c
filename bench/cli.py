"""`agentplane bench`: the load harness (issue 7). See docs/performance.md for what it measures and how."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import record as records
from bench.baseline import ws_echo
from bench.idle import run_idle
from bench.procs import raise_fd_limit
from bench.report import render
from bench.run import run_tasks, say
from bench.scenarios import SCENARIOS, Scenario, resolve

_BASELINE_SECONDS = {True: 5.0, False: 15.0}  # quick / full


def add_parser(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="load-test a server with simulated agents and print a JSON record",
        description="Start a server (embedded Postgres unless DATABASE_URL), simulated SDK agents in "
        "separate processes, submit tasks and measure. The JSON record is the last line of stdout and is "
        "also written to bench/results/.",
    )
    bench.add_argument("--scenario", choices=SCENARIOS, default="throughput")
    bench.add_argument("--quick", action="store_true", help="shrink the scenario to finish within 60 s")
    bench.add_argument("--agents", type=int, help="simulated agents (default: the scenario's)")
    bench.add_argument("--procs", type=int, help="agent processes the agents are spread over")
    bench.add_argument(
        "--work-ms", type=float, help="each handler sleeps this long (default: returns at once)"
    )
    bench.add_argument("--tasks", type=int, help="tasks to submit")
    loop = bench.add_mutually_exclusive_group()
    loop.add_argument("--rate", type=float, help="open loop: submit at this many tasks per second")
    loop.add_argument("--concurrency", type=int, help="closed loop: this many submit-and-wait workers")
    bench.add_argument("--batch", type=int, help="tasks per POST /api/v1/tasks:batch (1: single submits)")
    bench.add_argument("--inflight", type=int, help="burst and single: submit requests in flight at once")
    bench.add_argument("--agent-concurrency", type=int, help="max_concurrency each agent registers with")
    bench.add_argument("--baseline", choices=["ws-echo"], help="also measure a bare WebSocket echo server")
    bench.add_argument("--url", help="use this running server (admin key from AGENTPLANE_ADMIN_KEY)")
    bench.add_argument(
        "--agents-url",
        help="with --url: the agents connect to this other replica of the same database, so every task is "
        "submitted and waited on one replica and run through another",
    )
    bench.add_argument("--json-only", action="store_true", help="print only the JSON record")
    bench.add_argument("--keep-logs", action="store_true", help="keep the server's and agents' logs")
    bench.add_argument("--no-save", action="store_true", help="do not write the record to bench/results/")
    bench.set_defaults(func=cmd_bench)


def _scenario(args: argparse.Namespace) -> Scenario:
    return resolve(
        args.scenario,
        quick=args.quick,
        agents=args.agents,
        procs=args.procs,
        work_ms=args.work_ms,
        tasks=args.tasks,
        rate=args.rate,
        concurrency=args.concurrency,
        batch=args.batch,
        inflight=args.inflight,
        agent_concurrency=args.agent_concurrency,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        scenario = _scenario(args)
    except ValueError as exc:
        print(f"agentplane bench: {exc}", file=sys.stderr)
        return 2
    raise_fd_limit()
    # SIGTERM behaves like Ctrl-C: KeyboardInterrupt unwinds every `finally`, which stops the children.
    # SIGINT is set explicitly too: a shell starts background jobs with it ignored, and Python keeps that.
    previous = {
        sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    log_dir = Path(tempfile.mkdtemp(prefix="agentplane-bench-logs-"))
    record = records.new_record(scenario, quick=args.quick)
    started = time.monotonic()
    try:
        if args.agents_url and not args.url:
            raise ValueError("--agents-url needs --url (two running replicas of one database)")
        if scenario.name == "idle":
            run_idle(scenario, record, url=args.url, log_dir=log_dir)
        else:
            run_tasks(scenario, record, url=args.url, agents_url=args.agents_url, log_dir=log_dir)
        if args.baseline == "ws-echo":
            say("measuring the ws-echo baseline")
            connections = min(scenario.agents, 1000)  # idle's 10,000 would measure connects, not echoes
            record.update(
                ws_echo(
                    connections=connections,
                    procs=scenario.procs,
                    seconds=_BASELINE_SECONDS[args.quick],
                    log_dir=log_dir,
                )
            )
            if record.get("tasks_per_second") and record.get("baseline_rps"):
                record["vs_baseline"] = round(record["tasks_per_second"] / record["baseline_rps"], 3)
    except KeyboardInterrupt:
        say(f"interrupted; everything started was stopped (logs in {log_dir})")
        return 130
    except Exception as exc:
        say(f"failed: {exc} (logs in {log_dir})")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Logs are evidence when something went wrong: keep them then, and say where they are.
    suspicious = any(record.get(key) for key in ("lost", "duplicated", "errors"))
    if args.keep_logs or suspicious:
        record["log_dir"] = str(log_dir)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    record["wall_s"] = round(time.monotonic() - started, 1)
    if not args.no_save:
        say(f"record written to {records.write(record)}")
    if not args.json_only:
        render(record, Console())
    print(records.dumps(record), flush=True)
    return 0
