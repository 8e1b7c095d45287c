"""Pure numbers: percentiles, the exactly-once check, the Prometheus text we read. No I/O, no clock."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (the value at rank ceil(q/100 * n)).

    Nearest rank rather than interpolation: every reported number is a latency some task really had."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0-100")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize(values: Iterable[float]) -> dict[str, float | None]:
    """{p50, p90, p99, max} of millisecond values, rounded to the microsecond; None each without data."""
    ordered = sorted(values)
    if not ordered:
        empty: dict[str, float | None] = {name: None for name, _ in PERCENTILES}
        return empty | {"max": None}
    summary: dict[str, float | None] = {name: round(percentile(ordered, q), 3) for name, q in PERCENTILES}
    summary["max"] = round(ordered[-1], 3)
    return summary


def exactly_once(
    submitted: Iterable[str], succeeded: Iterable[str], executed: Iterable[str]
) -> tuple[int, int]:
    """(lost, duplicated) for one run.

    lost: submitted ids that did not end `succeeded`. duplicated: handler executions beyond one per
    submitted task (an execution of a task we did not submit is not ours to judge)."""
    wanted = set(submitted)
    lost = len(wanted - set(succeeded))
    runs = Counter(task_id for task_id in executed if task_id in wanted)
    duplicated = sum(count - 1 for count in runs.values() if count > 1)
    return lost, duplicated


def latencies_ms(starts_ns: Mapping[str, int], ends_ns: Mapping[str, int]) -> list[float]:
    """end - start in milliseconds for every id present in both maps (wall clock, one machine)."""
    return [(ends_ns[key] - start) / 1e6 for key, start in starts_ns.items() if key in ends_ns]


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in Prometheus text format whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        found = dict(_LABEL.findall(match["labels"] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match["value"])
    return total


def rate(count: int, seconds: float) -> float:
    """count per second, 0 when no time passed (a run that did nothing)."""
    return round(count / seconds, 1) if seconds > 0 else 0.0
