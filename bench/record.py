"""The JSON record of one run: its shape, where it is written, and the facts about the machine."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.scenarios import Scenario

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Every record has these keys (None when a run could not measure one); readers may rely on them.
REQUIRED_KEYS = (
    "scenario",
    "quick",
    "tasks",
    "tasks_per_second",
    "dispatch_latency_ms",
    "e2e_latency_ms",
    "lost",
    "duplicated",
    "errors",
    "server_cpu_percent",
    "server_cpu_ms_per_task",  # None when no task finished (idle, or a run that lost every task)
    "server_rss_mb",
    "baseline_rps",
    "cores",
    "commit",
    "started_at",
)
_EMPTY_LATENCY = {"p50": None, "p90": None, "p99": None, "max": None}


_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=_ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_commit() -> str | None:
    """HEAD of the checkout the bench runs from, with "-dirty" when the server's code has local changes."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--", "app", "agentplane", "migrations")
        return f"{head}-dirty" if dirty else head
    return None


def code_fingerprint() -> str | None:
    """A short hash of the server's code as it is on disk (HEAD plus uncommitted and untracked changes in
    app/, agentplane/, migrations/): two records with the same fingerprint measured the same code, even
    between commits."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        digest = hashlib.sha1(_git("rev-parse", "HEAD").encode())
        digest.update(_git("diff", "HEAD", "--", "app", "agentplane", "migrations").encode())
        for name in sorted(_git("ls-files", "--others", "--exclude-standard", "app", "agentplane").split()):
            with contextlib.suppress(OSError):
                digest.update(name.encode() + (_ROOT / name).read_bytes())
        return digest.hexdigest()[:12]
    return None


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews every number
    }


def new_record(scenario: Scenario, *, quick: bool) -> dict[str, Any]:
    """A record with every required key present, the run's settings and the machine filled in."""
    host = machine()
    record: dict[str, Any] = {key: None for key in REQUIRED_KEYS}
    record.update(
        {
            "scenario": scenario.name,
            "quick": quick,
            "tasks": 0,
            "dispatch_latency_ms": dict(_EMPTY_LATENCY),
            "e2e_latency_ms": dict(_EMPTY_LATENCY),
            "lost": 0,
            "duplicated": 0,
            "errors": 0,
            "cores": host["cores"],
            "commit": git_commit(),
            "code_fingerprint": code_fingerprint(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": host,
            "settings": asdict(scenario),
        }
    )
    return record


def missing_keys(record: dict[str, Any]) -> list[str]:
    return [key for key in REQUIRED_KEYS if key not in record]


def dumps(record: dict[str, Any]) -> str:
    """One line of JSON (the last line of stdout is the record)."""
    return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS).decode()


def write(record: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """bench/results/<scenario>-<UTC timestamp>.json; a second record in the same second gets a suffix."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{record['scenario']}-{stamp}.json"
    number = 1
    while path.exists():
        number += 1
        path = directory / f"{record['scenario']}-{stamp}-{number}.json"
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    return path
