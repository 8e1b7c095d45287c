"""CPU and memory of the processes under test, sampled from a background thread with psutil.

CPU is measured from cumulative CPU times between mark() and stop(), which is exact over the window; RSS
is sampled (every `interval` seconds) and reported as the peak. 100 % CPU means one core busy."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_by_pid(processes: list[psutil.Process]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


def _rss_bytes(processes: list[psutil.Process]) -> int:
    """RSS of one process; for several (Postgres and its backends) the sum of PSS instead, because
    summing RSS would count the shared buffers once per backend."""
    if len(processes) == 1:
        with contextlib.suppress(psutil.Error):
            return int(processes[0].memory_info().rss)
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error, AttributeError):
            total += int(process.memory_full_info().pss)
    return total


@dataclass
class Usage:
    cpu_percent: float | None = None
    rss_mb: float | None = None  # peak over the window (PSS summed for a group of several processes)
    rss_mb_start: float | None = None
    seconds: float = 0.0  # the window's length


@dataclass
class Sampler:
    """Watches named groups of process trees: {"server": [pid], "postgres": [postmaster pid]}. Groups named
    in `solo` are those processes alone, without their children (the harness: its children are the rest)."""

    groups: dict[str, list[int]]
    solo: frozenset[str] = frozenset()
    interval: float = 0.5
    _peak: dict[str, int] = field(default_factory=dict)
    _start_rss: dict[str, int] = field(default_factory=dict)
    # CPU seconds per pid, first and last seen: a Postgres backend that exits mid-window takes its CPU
    # time with it, so a plain before/after sum could even come out negative.
    _cpu_first: dict[str, dict[int, float]] = field(default_factory=dict)
    _cpu_last: dict[str, dict[int, float]] = field(default_factory=dict)
    _t0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _processes(self, name: str) -> list[psutil.Process]:
        # Re-walked on every sample: Postgres forks a backend per new connection.
        if name in self.solo:
            return [process for pid in self.groups[name] for process in _tree(pid)[:1]]
        return [process for pid in self.groups[name] for process in _tree(pid)]

    def mark(self) -> None:
        """Start the measured window (after setup: server start and agent connects are not counted)."""
        self._t0 = time.monotonic()
        for name in self.groups:
            processes = self._processes(name)
            self._cpu_first[name] = _cpu_by_pid(processes)
            self._cpu_last[name] = dict(self._cpu_first[name])
            self._start_rss[name] = self._peak[name] = _rss_bytes(processes)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()

    def _sample(self, name: str) -> list[psutil.Process]:
        processes = self._processes(name)
        self._cpu_last[name].update(_cpu_by_pid(processes))
        return processes

    def _cpu_percent(self, name: str, elapsed: float) -> float:
        first, last = self._cpu_first[name], self._cpu_last[name]
        used = sum(seconds - first.get(pid, 0.0) for pid, seconds in last.items())
        return round(used / elapsed * 100, 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for name in self.groups:
                self._peak[name] = max(self._peak.get(name, 0), _rss_bytes(self._sample(name)))

    def stop(self) -> dict[str, Usage]:
        """End the window: CPU % over it and peak RSS, per group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        elapsed = time.monotonic() - self._t0
        usage: dict[str, Usage] = {}
        for name in self.groups:
            processes = self._sample(name)
            if not processes or elapsed <= 0:
                usage[name] = Usage()
                continue
            peak = max(self._peak.get(name, 0), _rss_bytes(processes))
            usage[name] = Usage(
                cpu_percent=self._cpu_percent(name, elapsed),
                rss_mb=round(peak / 2**20, 1),
                rss_mb_start=round(self._start_rss.get(name, 0) / 2**20, 1),
                seconds=elapsed,
            )
        return usage

    def rss_mb(self, name: str) -> float:
        """The group's RSS now (for before/after comparisons outside a window)."""
        return round(_rss_bytes(self._processes(name)) / 2**20, 1)
