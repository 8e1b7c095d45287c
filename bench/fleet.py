"""The agent processes: start them, wait until the server lists every agent active, stop them and read
what they executed."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.agents import CAPABILITY
from bench.procs import Child, clean_env, python_module
from bench.scenarios import split


@dataclass
class FleetReport:
    executions: list[tuple[str, str, int, int]] = field(default_factory=list)
    pings: dict[str, int] = field(default_factory=dict)
    registered: int = 0
    failed: int = 0
    slow_registrations: int = 0
    missing_reports: int = 0  # agent processes that wrote no report (crashed or killed)


class Fleet:
    def __init__(
        self,
        *,
        ws_url: str,
        key: str,
        agents: int,
        procs: int,
        work_ms: float,
        concurrency: int,
        connect_parallel: int,
        log_dir: Path,
        max_seconds: float,
    ) -> None:
        # A run-unique prefix: with --url, agents of earlier runs may still be listed under other ids.
        self.prefix = f"bench-{secrets.token_hex(3)}"
        self.agents = agents
        self.children: list[Child] = []
        self.outputs: list[Path] = []
        for number, count in enumerate(split(agents, procs)):
            out = log_dir / f"agents-{number}.json"
            argv = python_module(
                "bench.agents",
                "--url",
                ws_url,
                "--key",
                key,
                "--count",
                str(count),
                "--prefix",
                f"{self.prefix}-p{number}",
                "--work-ms",
                str(work_ms),
                "--concurrency",
                str(concurrency),
                "--connect-parallel",
                str(connect_parallel),
                "--max-seconds",
                str(max_seconds),
                "--out",
                str(out),
                "--stop-on-eof",
            )
            log = log_dir / f"agents-{number}.log"
            self.children.append(
                Child(f"agents-{number}", argv, env=clean_env({}), log_path=log, stdin_pipe=True)
            )
            self.outputs.append(out)

    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    async def active_count(self, client: httpx.AsyncClient) -> int:
        """Our agents the registry lists as active (paged: the API returns at most 500 at a time)."""
        count, cursor = 0, None
        for _ in range(self.agents // 500 + 50):
            params: dict[str, str | int] = {"status": "active", "capability": CAPABILITY, "limit": 500}
            if cursor:
                params["cursor"] = cursor
            response = await client.get("/api/v1/agents", params=params)
            response.raise_for_status()
            body = response.json()
            count += sum(1 for agent in body["items"] if agent["id"].startswith(self.prefix))
            cursor = body["next_cursor"]
            if not cursor:
                break
        return count

    async def _active_total(self, client: httpx.AsyncClient) -> int:
        """Active agents of any client, from one aggregate query: cheap enough to poll while thousands
        connect (paging through the list would load the server we are timing)."""
        response = await client.get("/api/v1/registry/metrics")
        response.raise_for_status()
        return int(response.json()["agents_by_status"].get("active", 0))

    async def wait_active(self, client: httpx.AsyncClient, limit_s: float) -> float:
        """Seconds until every agent is active; raises if that takes longer than `limit_s`."""
        started = time.monotonic()
        poll = 0.25 if self.agents <= 1000 else 1.0
        count = 0
        while (elapsed := time.monotonic() - started) < limit_s:
            for child in self.children:
                if not child.alive():
                    raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
            # The exact, paged count of our own agents only once the cheap total says it can be reached.
            if await self._active_total(client) >= self.agents:
                count = await self.active_count(client)
                if count >= self.agents:
                    return elapsed
            await asyncio.sleep(poll)
        raise RuntimeError(f"only {count} of {self.agents} agents active after {limit_s:.0f} s")

    def stop(self, timeout: float = 30.0) -> FleetReport:
        """Close every stdin (the agents stop and write their reports), wait, then read the reports."""
        for child in self.children:
            child.close_stdin()
        deadline = time.monotonic() + timeout
        for child in self.children:
            if not child.wait(max(0.1, deadline - time.monotonic())):
                child.stop(timeout=5.0)
        report = FleetReport()
        for out in self.outputs:
            try:
                data: dict[str, Any] = orjson.loads(out.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                report.missing_reports += 1
                continue
            report.executions.extend(tuple(row) for row in data["executions"])
            report.pings.update(data["pings"])
            report.registered += int(data["registered"])
            report.failed += int(data["failed"])
            report.slow_registrations += int(data.get("slow_registrations", 0))
        return report

    def kill(self) -> None:
        """Cleanup after an error: no reports wanted, just no orphans."""
        for child in self.children:
            child.stop(timeout=10.0)
