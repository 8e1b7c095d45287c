"""Scenario presets and how command-line overrides apply to them. Pure: tests call resolve() directly."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

ScenarioName = Literal["throughput", "single", "latency", "fanout", "idle"]
SCENARIOS: tuple[ScenarioName, ...] = ("throughput", "single", "latency", "fanout", "idle")


@dataclass(frozen=True)
class Scenario:
    name: ScenarioName
    agents: int
    procs: int
    tasks: int  # 0 with an open loop: as many as the rate fills in load_seconds
    batch: int = 1  # tasks per POST (1: POST /tasks, more: POST /tasks:batch)
    rate: float | None = None  # open loop: tasks per second
    concurrency: int | None = None  # closed loop: submit-and-wait workers
    work_ms: float = 0.0  # the handler sleeps this long; 0 returns at once
    agent_concurrency: int = 4  # max_concurrency each agent registers with
    inflight: int = 2  # burst mode (no rate, no concurrency): submit requests in flight at once
    rate_fraction: float = 0.5  # latency: the open-loop rate as a share of the calibrated max
    calibration_tasks: int = 0  # latency: tasks of the burst that measures the max rate
    calibration_inflight: int = 16  # latency: submit requests in flight while calibrating
    load_seconds: float = 30.0  # open loop with tasks=0: how long to submit
    health_interval: float = 3600.0  # seconds between server pings (long: pings are not what we measure)
    idle_seconds: float = 0.0  # idle: how long the fleet sits connected while pings are counted
    connect_parallel: int = 100  # per agent process: handshakes in flight at once
    deadline: float = 300.0  # seconds the load phase may take before unfinished tasks count as lost


PRESETS: dict[ScenarioName, Scenario] = {
    "throughput": Scenario("throughput", agents=100, procs=2, tasks=20_000, batch=500),
    # One POST per task (how most users submit), 16 requests in flight.
    "single": Scenario("single", agents=100, procs=2, tasks=10_000, inflight=16),
    "latency": Scenario("latency", agents=100, procs=2, tasks=0, calibration_tasks=3_000, load_seconds=40.0),
    "fanout": Scenario("fanout", agents=1_000, procs=2, tasks=10_000, batch=500),
    "idle": Scenario(
        "idle", agents=10_000, procs=2, tasks=0, health_interval=10.0, idle_seconds=60.0, deadline=600.0
    ),
}

# --quick: every scenario, server start included, inside 60 s on the 2-core machine.
QUICK: dict[ScenarioName, dict[str, Any]] = {
    "throughput": {"tasks": 4_000, "batch": 250, "deadline": 30.0},
    "single": {"tasks": 3_000, "deadline": 30.0},
    "latency": {"calibration_tasks": 600, "load_seconds": 8.0, "deadline": 25.0},
    "fanout": {"tasks": 1_000, "batch": 250, "deadline": 20.0},
    # 10,000 agents take minutes to register here; 500 show the per-agent cost and the ping cadence.
    "idle": {"agents": 500, "health_interval": 2.0, "idle_seconds": 6.0, "deadline": 30.0},
}

_OVERRIDABLE = {f.name for f in fields(Scenario)} - {"name"}


def resolve(name: ScenarioName, *, quick: bool = False, **overrides: Any) -> Scenario:
    """The preset, shrunk by --quick, then the explicit command-line values (None means "not given")."""
    scenario = PRESETS[name]
    if quick:
        scenario = replace(scenario, **QUICK[name])
    given = {key: value for key, value in overrides.items() if value is not None}
    unknown = set(given) - _OVERRIDABLE
    if unknown:
        raise ValueError(f"unknown scenario settings: {', '.join(sorted(unknown))}")
    if given.get("rate") is not None and given.get("concurrency") is not None:
        raise ValueError("--rate (open loop) and --concurrency (closed loop) exclude each other")
    if "rate" in given:
        scenario = replace(scenario, concurrency=None)
    if "concurrency" in given:
        scenario = replace(scenario, rate=None)
    scenario = replace(scenario, **given)
    _check(scenario)
    return scenario


def _check(scenario: Scenario) -> None:
    if scenario.agents < 1 or scenario.procs < 1:
        raise ValueError("--agents and --procs must be at least 1")
    if scenario.procs > scenario.agents:
        raise ValueError("--procs cannot exceed --agents (a process runs at least one agent)")
    if not 1 <= scenario.batch <= 1000:
        raise ValueError("--batch must be 1-1000 (the API takes at most 1000 tasks per batch)")
    open_loop = scenario.rate is not None or scenario.name == "latency"
    if scenario.inflight < 1:
        raise ValueError("--inflight must be at least 1")
    if scenario.name == "single" and scenario.batch != 1:
        raise ValueError("the single scenario submits one task per request (--batch 1)")
    if scenario.tasks < 0 or (scenario.tasks == 0 and scenario.name != "idle" and not open_loop):
        raise ValueError("--tasks must be at least 1 (0 only with an open loop: rate x load_seconds)")
    if scenario.rate is not None and scenario.rate <= 0:
        raise ValueError("--rate must be positive")
    if scenario.concurrency is not None and scenario.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if scenario.work_ms < 0:
        raise ValueError("--work-ms cannot be negative")


def open_loop_tasks(scenario: Scenario, rate: float) -> int:
    """Tasks an open loop submits: the explicit count, or what `rate` fills in load_seconds."""
    return scenario.tasks or max(1, round(rate * scenario.load_seconds))


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible, larger shares first: split(10, 3) == [4, 3, 3]."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]
