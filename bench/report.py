"""The human view of a record: one rich table. The machine view is the JSON line printed after it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_LATENCIES = ("dispatch_latency_ms", "e2e_latency_ms", "ping_rtt_ms", "baseline_rtt_ms")
_SHOWN = (
    ("tasks", "tasks submitted"),
    ("tasks_per_second", "tasks/s end to end"),
    ("target_rate", "open-loop rate (tasks/s)"),
    ("calibrated_max_rate", "calibrated max (tasks/s)"),
    ("submit_rate", "submit rate achieved (tasks/s)"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("retried", "retried (attempt > 1)"),
    ("errors", "errors"),
    ("agents_connected", "agents connected"),
    ("connect_s", "fleet connect time (s)"),
    ("server_cpu_percent", "server CPU % (100 = 1 core)"),
    ("server_cpu_ms_per_task", "server CPU per task (ms)"),
    ("server_rss_mb", "server RSS peak (MB)"),
    ("postgres_cpu_percent", "Postgres CPU %"),
    ("postgres_cpu_ms_per_task", "Postgres CPU per task (ms)"),
    ("postgres_rss_mb", "Postgres memory peak (MB, PSS)"),
    ("agents_cpu_percent", "agent processes CPU %"),
    ("harness_cpu_percent", "harness CPU %"),
    ("failed", "failed"),
    ("unfinished", "unfinished at the deadline"),
    ("rss_per_agent_kb", "server RSS per agent (KB)"),
    ("health_check_failures", "health-check failures"),
    ("pings_on_time", "pings answered on time"),
    ("ping_rounds_in_window", "ping rounds in window"),
    ("ping_rounds_expected", "ping rounds expected"),
    ("server_cpu_ms_per_ping", "server CPU per ping (ms)"),
    ("baseline_rps", "ws-echo baseline (round trips/s)"),
    ("vs_baseline", "tasks/s ÷ baseline"),
)


def _latency(values: dict[str, Any]) -> str:
    return "  ".join(f"{name} {values[name]}" for name in ("p50", "p90", "p99", "max") if name in values)


def render(record: dict[str, Any], console: Console) -> None:
    title = f"agentplane bench: {record['scenario']}{' (quick)' if record.get('quick') else ''}"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, label in _SHOWN:
        if record.get(key) is not None:
            table.add_row(label, str(record[key]))
    for key in _LATENCIES:
        values = record.get(key)
        if isinstance(values, dict) and values.get("p50") is not None:
            table.add_row(key.replace("_", " "), _latency(values))
    table.caption = f"{record['cores']} cores, commit {record['commit']}, started {record['started_at']}"
    console.print(table)
