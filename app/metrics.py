"""Every Prometheus collector. The seed's five keep their exact names, types, labels and buckets.

Collectors live on a per-app registry so the app can be built more than once in one process (tests).
Label values are bounded: no task ids; agent_id only on the utilization gauge, removed on deregistration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Every status `mcp_agents_active` shows, `busy` (derived) included: each model reads 0 for a status it has
# no agent in, so a dashboard or an alert sees a quiet fleet as 0 instead of a missing series.
AGENT_STATUSES = ("active", "busy", "draining", "unhealthy", "quarantined", "offline", "error")


def exponential_buckets(start: float, factor: float, count: int) -> list[float]:
    return [start * factor**i for i in range(count)]


EXECUTION_BUCKETS = exponential_buckets(0.1, 2, 15)  # the seed's ExponentialBuckets(0.1, 2, 15)
DISPATCH_BUCKETS = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The seed's collectors.
        self.agents_registered = Counter(
            "mcp_agents_registered_total", "Total number of agents registered", ["model"], registry=r
        )
        self.agents_active = Gauge(
            "mcp_agents_active", "Number of active agents", ["model", "status"], registry=r
        )
        self.tasks_assigned = Counter(
            "mcp_tasks_assigned_total",
            "Total number of tasks assigned",
            ["agent_model", "task_type"],
            registry=r,
        )
        self.task_execution_duration = Histogram(
            "mcp_task_execution_duration_seconds",
            "Task execution duration",
            ["agent_model", "task_type"],
            buckets=EXECUTION_BUCKETS,
            registry=r,
        )
        self.agent_utilization = Gauge(
            "mcp_agent_utilization_ratio", "Agent utilization ratio (0-1)", ["agent_id", "model"], registry=r
        )
        # What an operator needs besides.
        self.tasks_submitted = Counter(
            "agentplane_tasks_submitted_total", "Tasks accepted", ["task_type"], registry=r
        )
        self.tasks_finished = Counter(
            "agentplane_tasks_finished_total",
            "Tasks that reached a terminal state",
            ["task_type", "status"],
            registry=r,
        )
        self.task_retries = Counter(
            "agentplane_task_retries_total",
            "Tasks sent back to the queue",
            ["task_type", "reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "agentplane_tasks_queue_depth", "Open tasks by status (whole fleet)", ["status"], registry=r
        )
        self.ws_connections = Gauge(
            "agentplane_ws_connections", "Agent WebSocket connections held by this replica", registry=r
        )
        self.ws_frames = Counter(
            "agentplane_ws_frames_total", "Frames by direction and type", ["direction", "type"], registry=r
        )
        self.tokens = Counter(
            "agentplane_tokens_total", "Tokens reported by agents", ["model", "direction"], registry=r
        )
        self.cost = Counter(
            "agentplane_cost_usd_total", "Cost reported or computed, USD", ["model"], registry=r
        )
        self.dispatch_latency = Histogram(
            "agentplane_dispatch_latency_seconds",
            "Time from a task becoming available to its assign frame being sent",
            ["task_type"],
            buckets=DISPATCH_BUCKETS,
            registry=r,
        )
        self.health_check_failures = Counter(
            "agentplane_health_check_failures_total", "Failed agent health checks", ["model"], registry=r
        )
        self.sessions_finished = Counter(
            "agentplane_sessions_finished_total",
            "Collaboration sessions finished",
            ["strategy", "status"],
            registry=r,
        )
        self.sessions_active = Gauge(
            "agentplane_sessions_active",
            "Collaboration sessions running (whole fleet)",
            ["strategy"],
            registry=r,
        )
        self._frames: dict[tuple[str, str], Counter] = {}

    def count_frame(self, direction: str, frame_type: str) -> None:
        """One WebSocket frame ("in" or "out"). Called per frame: the labelled child is looked up once."""
        child = self._frames.get((direction, frame_type))
        if child is None:
            child = self._frames[(direction, frame_type)] = self.ws_frames.labels(direction, frame_type)
        child.inc()

    def show_agents(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """The fleet by (model, status, count): every known status of every model, 0 when none."""
        shown = {(model, status): count for model, status, count in counts}
        self.agents_active.clear()
        for model in {model for model, _ in shown}:
            for status in AGENT_STATUSES:
                self.agents_active.labels(model, status).set(shown.get((model, status), 0))
        for (model, status), count in shown.items():
            if status not in AGENT_STATUSES:  # a status added later still shows
                self.agents_active.labels(model, status).set(count)

    def show_sessions(self, running: Mapping[str, int], strategies: Iterable[str]) -> None:
        """Running sessions per strategy; a strategy with none reads 0 rather than having no series."""
        self.sessions_active.clear()
        for strategy in {*strategies, *running}:
            self.sessions_active.labels(strategy).set(running.get(strategy, 0))

    def forget_agent(self, agent_id: str, model: str) -> None:
        with contextlib.suppress(KeyError):
            self.agent_utilization.remove(agent_id, model)
