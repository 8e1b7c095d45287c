"""The task scenarios (throughput, latency, fanout): server, agents, load, verification, one record.

Timeline of a run: start the server (or attach to --url), create an agent key and a client key, start the
agent processes and wait until the registry lists them all active; then open the measured window (CPU
sampling), submit, wait for the server to count every task finished, close the window; read every task
back, stop the agents (which report what they executed), stop the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from bench import collect, load
from bench import server as servers
from bench.fleet import Fleet, FleetReport
from bench.sampler import Sampler, Usage
from bench.scenarios import Scenario, open_loop_tasks
from bench.stats import exactly_once, latencies_ms, rate, summarize

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}

_CONNECT_TIMEOUT = 120.0  # seconds for the whole fleet to register (1,000 agents take 10-20 s here)


def say(message: str) -> None:
    """Progress goes to stderr: stdout carries only the table and the record."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass
class Measured:
    submitted: load.Submitted
    rows: dict[str, collect.TaskRow]
    usage: dict[str, Usage]
    completed: bool
    extra: dict[str, Any]


def _submitter(
    scenario: Scenario, client: httpx.AsyncClient, deadline: float, *, base_url: str, key: str
) -> Coroutine[Any, Any, load.Submitted]:
    if scenario.rate is not None:
        total = open_loop_tasks(scenario, scenario.rate)
        return load.open_loop(client, total, scenario.batch, scenario.rate, deadline, key=key)
    if scenario.concurrency is not None:
        return load.closed_loop(client, scenario.tasks, scenario.batch, scenario.concurrency, deadline)
    if scenario.name == "single":
        return load.single(base_url, key, scenario.tasks, scenario.inflight, deadline)
    return load.burst(client, scenario.tasks, scenario.batch, scenario.inflight, deadline)


async def _calibrate(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, scenario: Scenario
) -> tuple[float, dict[str, Any]]:
    """The max end-to-end rate of this setup with the scenario's own way of submitting (single submits for
    the latency preset): a burst with enough requests in flight, first submit -> last finished_at."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scenario.deadline
    before = await collect.finished_count(admin)
    burst = await load.burst(
        client, scenario.calibration_tasks, scenario.batch, scenario.calibration_inflight, deadline
    )
    await collect.wait_finished(admin, expected=len(burst.sent_ns), baseline=before, deadline=deadline)
    rows = await collect.read_tasks(client, set(burst.sent_ns), burst.first_ns - 5 * 10**9)
    ends = [row.finished_ns for row in rows.values() if row.finished_ns and row.status == "succeeded"]
    if not ends:
        raise RuntimeError("calibration: no task finished; is any agent connected?")
    max_rate = len(ends) / ((max(ends) - burst.first_ns) / 1e9)
    return max_rate, {"calibrated_max_rate": round(max_rate, 1), "calibration_tasks": len(ends)}


async def measure(
    server: servers.Server,
    client_key: str,
    scenario: Scenario,
    sampler: Sampler,
    results: servers.Server | None = None,
) -> Measured:
    """``results``: the replica the agents are on, whose finished-task counter tells when the run is done (a
    replica counts the results it records); the same server unless the tasks cross replicas."""
    extra: dict[str, Any] = {}
    async with server.client(client_key) as client, (results or server).client() as admin:
        if scenario.name == "latency" and scenario.rate is None and scenario.concurrency is None:
            max_rate, extra = await _calibrate(client, admin, scenario)
            scenario = replace(scenario, rate=round(max_rate * scenario.rate_fraction, 1))
            say(f"calibrated max {max_rate:.0f} tasks/s; open loop at {scenario.rate:.0f} tasks/s")
        extra["target_rate"] = scenario.rate
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scenario.deadline
        before = await collect.finished_count(admin)
        sampler.mark()
        submitted = await _submitter(scenario, client, deadline, base_url=server.base_url, key=client_key)
        completed = await collect.wait_finished(
            admin, expected=len(submitted.sent_ns), baseline=before, deadline=deadline
        )
        usage = sampler.stop()
        if submitted.last_ns > submitted.first_ns:
            seconds = (submitted.last_ns - submitted.first_ns) / 1e9
            extra["submit_rate"] = rate(len(submitted.sent_ns), seconds)
        extra["late_submits"] = submitted.late
        rows = await collect.read_tasks(client, set(submitted.sent_ns), submitted.first_ns - 5 * 10**9)
    return Measured(submitted, rows, usage, completed, extra)


def breakdown(
    sent_ns: dict[str, int], rows: dict[str, collect.TaskRow], received: dict[str, int]
) -> dict[str, dict[str, float | None]]:
    """Where dispatch latency goes, on the database's clock (now() is the transaction's start):
    submit -> the INSERT's transaction began (HTTP, auth, pool checkout); -> the lease's transaction
    began (queue wait, NOTIFY, dispatcher wake-up, claim); -> the agent read the assign (lease writes,
    commit, the frame's trip through the writer queue and the socket)."""
    created = {task_id: row.created_ns for task_id, row in rows.items()}
    assigned = {task_id: row.assigned_ns for task_id, row in rows.items() if row.assigned_ns}
    return {
        "submit_to_created": summarize(latencies_ms(sent_ns, created)),
        "created_to_assigned": summarize(latencies_ms(created, assigned)),
        "assigned_to_received": summarize(latencies_ms(assigned, received)),
    }


def summarize_run(record: dict[str, Any], measured: Measured, fleet: FleetReport) -> None:
    """Fill the record's numbers from what the harness, the server and the agents saw."""
    submitted, rows = measured.submitted, measured.rows
    succeeded = {task_id for task_id, row in rows.items() if row.status == "succeeded"}
    finished_ns = {task_id: rows[task_id].finished_ns or 0 for task_id in succeeded}
    first_assign: dict[str, int] = {}
    for task_id, _assignment, received_ns, _started in sorted(fleet.executions, key=lambda e: e[2]):
        first_assign.setdefault(task_id, received_ns)
    lost, duplicated = exactly_once(submitted.sent_ns, succeeded, (e[0] for e in fleet.executions))
    span = (max(finished_ns.values()) - submitted.first_ns) / 1e9 if finished_ns else 0.0
    unfinished = sum(1 for row in rows.values() if row.status not in TERMINAL) + len(
        set(submitted.sent_ns) - rows.keys()
    )
    failed = sum(1 for row in rows.values() if row.status in TERMINAL and row.status != "succeeded")
    record.update(
        {
            "tasks": len(submitted.sent_ns),
            "tasks_succeeded": len(succeeded),
            "duration_s": round(span, 3),
            "tasks_per_second": rate(len(succeeded), span),
            "dispatch_latency_ms": summarize(latencies_ms(submitted.sent_ns, first_assign)),
            "dispatch_breakdown_ms": breakdown(submitted.sent_ns, rows, first_assign),
            "e2e_latency_ms": summarize(latencies_ms(submitted.sent_ns, finished_ns)),
            "lost": lost,  # submitted, not succeeded: failed + unfinished
            "failed": failed,
            "unfinished": unfinished,  # still open when the deadline passed (too slow, not broken)
            "duplicated": duplicated,
            "retried": sum(1 for row in rows.values() if row.attempt > 1),
            "errors": len(submitted.errors) + fleet.failed + fleet.missing_reports,
            "slow_registrations": fleet.slow_registrations,
            "error_samples": submitted.errors[:5],
            "completed_before_deadline": measured.completed,
            **measured.extra,
        }
    )
    for name, usage in measured.usage.items():
        record[f"{name}_cpu_percent"] = usage.cpu_percent
        record[f"{name}_rss_mb"] = usage.rss_mb
        if usage.cpu_percent is not None and succeeded:
            # CPU per finished task over the window: the number that says where a core's time goes.
            per_task = usage.cpu_percent / 100 * usage.seconds * 1000 / len(succeeded)
            record[f"{name}_cpu_ms_per_task"] = round(per_task, 2)


def run_tasks(
    scenario: Scenario,
    record: dict[str, Any],
    *,
    url: str | None,
    log_dir: Path,
    agents_url: str | None = None,
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        if url:
            server = servers.attach(url)
        else:
            say("starting the server")
            server = servers.start(health_interval=scenario.health_interval, log_dir=log_dir)
        stack.callback(server.stop)
        record["server_start_s"] = round(time.monotonic() - started, 2)
        agent_key = server.create_key("agent", "bench agents")
        client_key = server.create_key("client", "bench client")
        say(f"starting {scenario.agents} agents in {scenario.procs} processes")
        # Another replica for the agents: the tasks cross replicas (submitted here, run there).
        agents_server = servers.attach(agents_url) if agents_url else server
        record["cross_replica"] = agents_server is not server
        fleet = Fleet(
            ws_url=agents_server.ws_url,
            key=agent_key,
            agents=scenario.agents,
            procs=scenario.procs,
            work_ms=scenario.work_ms,
            concurrency=scenario.agent_concurrency,
            connect_parallel=scenario.connect_parallel,
            log_dir=log_dir,
            # A backstop only (the harness stops them): calibration and measurement each get a deadline.
            max_seconds=2 * scenario.deadline + _CONNECT_TIMEOUT + 120,
        )
        stack.callback(fleet.kill)

        async def connect() -> float:
            async with server.client() as admin:
                return await fleet.wait_active(admin, _CONNECT_TIMEOUT)

        record["connect_s"] = round(asyncio.run(connect()), 2)
        groups = {
            "server": server.pids()[:1],
            "postgres": server.pids()[1:],
            "agents": fleet.pids(),
            "harness": [os.getpid()],
        }
        sampler = Sampler({name: pids for name, pids in groups.items() if pids}, solo=frozenset({"harness"}))
        say(f"submitting {scenario.tasks} tasks")
        measured = asyncio.run(measure(server, client_key, scenario, sampler, results=agents_server))
        say("stopping the agents")
        summarize_run(record, measured, fleet.stop())
    return record
