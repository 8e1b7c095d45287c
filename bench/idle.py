"""The idle scenario: many connected agents doing nothing but answering the server's pings.

What it tells: the server's memory per connected agent, and whether the health monitor's pings still go
out and come back in time at that scale (and what they cost in CPU). The ping interval is set short for
this scenario so that the window sees several rounds."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

import httpx

from bench import server as servers
from bench.collect import to_ns
from bench.fleet import Fleet
from bench.run import say
from bench.sampler import Sampler
from bench.scenarios import Scenario
from bench.stats import metric_sum, percentile, summarize

_CONNECT_TIMEOUT = 600.0  # 10,000 registrations, one transaction each, take minutes on 2 cores
_SAMPLED_AGENTS = 25  # agents whose recorded health checks we read back


async def _failures(admin: httpx.AsyncClient) -> float:
    response = await admin.get("/metrics")
    response.raise_for_status()
    return metric_sum(response.text, "agentplane_health_check_failures_total")


async def _sampled_checks(
    admin: httpx.AsyncClient, agent_ids: list[str], since_ns: int
) -> list[dict[str, Any]]:
    """The health checks the server recorded for a few agents since the window opened."""
    checks: list[dict[str, Any]] = []
    for agent_id in agent_ids:
        response = await admin.get(f"/api/v1/agents/{agent_id}")
        if response.status_code != 200:
            continue
        for check in response.json().get("health_checks", []):
            at = to_ns(check["at"])
            if at is not None and at >= since_ns:
                checks.append(check)
    return checks


async def _observe(
    server: servers.Server, scenario: Scenario, sampler: Sampler, ids: list[str]
) -> dict[str, Any]:
    async with server.client() as admin:
        before = await _failures(admin)
        since = time.time_ns()
        sampler.mark()
        await asyncio.sleep(scenario.idle_seconds)
        usage = sampler.stop()
        failures = await _failures(admin) - before
        checks = await _sampled_checks(admin, ids, since)
    rtts = [float(c["duration_ms"]) for c in checks if c["ok"] and c["duration_ms"] is not None]
    server_usage = usage.get("server")
    cpu = server_usage.cpu_percent if server_usage else None
    rounds = scenario.idle_seconds / scenario.health_interval
    pings = scenario.agents * rounds
    return {
        "health_check_failures": int(failures),
        "health_checks_sampled": len(checks),
        "health_checks_sampled_failed": sum(1 for c in checks if not c["ok"]),
        "ping_rtt_ms": summarize(rtts),
        # CPU the server spent per ping over the window (pings are all it does while idle).
        "server_cpu_ms_per_ping": round(cpu / 100 * scenario.idle_seconds * 1000 / pings, 3)
        if cpu is not None and pings
        else None,
        **{
            f"{name}_{key}": value
            for name, group in usage.items()
            for key, value in (("cpu_percent", group.cpu_percent), ("rss_mb", group.rss_mb))
        },
    }


def run_idle(scenario: Scenario, record: dict[str, Any], *, url: str | None, log_dir: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if url:
            server = servers.attach(url)
        else:
            say(f"starting the server (health checks every {scenario.health_interval:g} s)")
            server = servers.start(health_interval=scenario.health_interval, log_dir=log_dir)
        stack.callback(server.stop)
        agent_key = server.create_key("agent", "bench idle agents")
        pids = server.pids()
        sampler = Sampler({"server": pids[:1]} if pids else {})
        rss_before = sampler.rss_mb("server") if pids else None
        say(f"connecting {scenario.agents} idle agents in {scenario.procs} processes")
        fleet = Fleet(
            ws_url=server.ws_url,
            key=agent_key,
            agents=scenario.agents,
            procs=scenario.procs,
            work_ms=0.0,
            concurrency=scenario.agent_concurrency,
            connect_parallel=scenario.connect_parallel,
            log_dir=log_dir,
            max_seconds=_CONNECT_TIMEOUT + scenario.idle_seconds + 120,
        )
        stack.callback(fleet.kill)

        async def connect() -> float:
            async with server.client(timeout=120.0) as admin:
                return await fleet.wait_active(admin, min(_CONNECT_TIMEOUT, scenario.deadline))

        record["connect_s"] = round(asyncio.run(connect()), 2)
        groups = {"server": pids[:1], "postgres": pids[1:2], "agents": fleet.pids()}
        sampler = Sampler({name: group for name, group in groups.items() if group})
        ids = [f"{fleet.prefix}-p0-{index:05d}" for index in range(scenario.agents // scenario.procs)]
        sample = random.Random(7).sample(ids, min(_SAMPLED_AGENTS, len(ids)))
        say(
            f"all agents active after {record['connect_s']} s; watching pings for {scenario.idle_seconds:g} s"
        )
        observed = asyncio.run(_observe(server, scenario, sampler, sample))
        report = fleet.stop()
    record.update(observed)
    per_agent = sorted(report.pings.values()) or [0]
    expected = scenario.idle_seconds / scenario.health_interval
    record.update(
        {
            "agents_connected": report.registered,
            "slow_registrations": report.slow_registrations,
            "errors": report.failed + report.missing_reports + observed["health_check_failures"],
            "server_rss_mb_before_agents": rss_before,
            "rss_per_agent_kb": round((observed["server_rss_mb"] - rss_before) * 1024 / scenario.agents, 1)
            if rss_before is not None and observed.get("server_rss_mb") is not None
            else None,
            # Pings over each agent's whole connection (connect phase included), as the agents counted them.
            "pings_per_agent": {"min": per_agent[0], "p50": percentile(per_agent, 50), "max": per_agent[-1]},
            # Rounds the server recorded per sampled agent inside the window, against the configured
            # cadence: fewer means a round (ping everyone, then one write of every result) overran.
            "ping_rounds_in_window": round(observed["health_checks_sampled"] / max(1, len(sample)), 1),
            "ping_rounds_expected": round(expected, 1),
            # Every ping answered within AGENT_HEALTH_CHECK_TIMEOUT: no failure counted by the server.
            "pings_on_time": observed["health_check_failures"] == 0
            and observed["health_checks_sampled_failed"] == 0,
        }
    )
    return record
