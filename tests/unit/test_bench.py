"""The pure helpers of the load harness: percentile math, the exactly-once check, presets, record shape.

No server, no timing: numbers about speed live in bench records, never in tests."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bench.collect import to_ns
from bench.record import REQUIRED_KEYS, dumps, missing_keys, new_record
from bench.scenarios import PRESETS, QUICK, SCENARIOS, ScenarioName, open_loop_tasks, resolve, split
from bench.stats import exactly_once, latencies_ms, metric_sum, percentile, rate, summarize


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0


def test_percentile_of_few_values_is_a_value_seen() -> None:
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 51) == 2.0


@pytest.mark.parametrize("q", [-1.0, 100.5])
def test_percentile_rejects_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], q)


def test_percentile_rejects_no_values() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summarize_sorts_and_rounds() -> None:
    summary = summarize([5.0, 1.0, 3.0, 2.0, 4.0004])
    assert summary == {"p50": 3.0, "p90": 5.0, "p99": 5.0, "max": 5.0}
    assert summarize([1.23456]) == {"p50": 1.235, "p90": 1.235, "p99": 1.235, "max": 1.235}


def test_summarize_without_data_keeps_its_keys() -> None:
    assert summarize([]) == {"p50": None, "p90": None, "p99": None, "max": None}


def test_exactly_once_counts_lost_and_duplicated() -> None:
    submitted = ["a", "b", "c", "d"]
    succeeded = ["a", "b", "c"]
    executed = ["a", "b", "b", "c", "c", "c", "zz"]  # zz is not ours: ignored
    assert exactly_once(submitted, succeeded, executed) == (1, 3)


def test_exactly_once_clean_run() -> None:
    ids = [str(i) for i in range(10)]
    assert exactly_once(ids, ids, ids) == (0, 0)


def test_latencies_use_ids_present_in_both() -> None:
    starts = {"a": 1_000_000, "b": 2_000_000, "c": 3_000_000}
    ends = {"a": 3_500_000, "c": 3_000_000}
    assert sorted(latencies_ms(starts, ends)) == [0.0, 2.5]


def test_rate() -> None:
    assert rate(300, 2.0) == 150.0
    assert rate(5, 0.0) == 0.0


def test_metric_sum_filters_on_labels() -> None:
    text = "\n".join(
        [
            "# HELP agentplane_tasks_finished_total Tasks that reached a terminal state",
            "# TYPE agentplane_tasks_finished_total counter",
            'agentplane_tasks_finished_total{status="succeeded",task_type="bench"} 120.0',
            'agentplane_tasks_finished_total{status="failed",task_type="bench"} 3.0',
            'agentplane_tasks_finished_total{status="succeeded",task_type="other"} 7.0',
            'agentplane_tasks_finished_created{status="succeeded",task_type="bench"} 1.7e9',
            "agentplane_health_check_failures_total 2.0",
        ]
    )
    assert metric_sum(text, "agentplane_tasks_finished_total", task_type="bench") == 123.0
    assert metric_sum(text, "agentplane_tasks_finished_total") == 130.0
    assert metric_sum(text, "agentplane_health_check_failures_total") == 2.0
    assert metric_sum(text, "missing_total") == 0.0


def test_to_ns_keeps_microseconds() -> None:
    assert to_ns("1970-01-01T00:00:01.000002+00:00") == 1_000_002_000
    assert to_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert to_ns(None) is None


def test_split_spreads_larger_shares_first() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert split(100, 2) == [50, 50]
    assert sum(split(10_000, 7)) == 10_000


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_preset_resolves_full_and_quick(name: ScenarioName) -> None:
    full, quick = resolve(name), resolve(name, quick=True)
    assert full == PRESETS[name]
    for key, value in QUICK[name].items():
        assert getattr(quick, key) == value


def test_presets_match_the_issue() -> None:
    assert PRESETS["throughput"].agents == 100
    assert PRESETS["throughput"].batch > 1
    assert PRESETS["latency"].batch == 1
    assert PRESETS["latency"].rate_fraction == 0.5
    assert PRESETS["fanout"].agents == 1_000
    assert PRESETS["idle"].agents == 10_000
    assert (PRESETS["single"].batch, PRESETS["single"].inflight) == (1, 16)


def test_overrides_win_and_loops_exclude_each_other() -> None:
    scenario = resolve("throughput", quick=True, agents=10, procs=1, batch=None, rate=100.0)
    assert (scenario.agents, scenario.procs, scenario.rate, scenario.concurrency) == (10, 1, 100.0, None)
    assert scenario.batch == QUICK["throughput"]["batch"]  # None means "not given"
    with pytest.raises(ValueError, match="exclude"):
        resolve("throughput", rate=10.0, concurrency=4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch": 1001}, "--batch"),
        ({"procs": 3, "agents": 2}, "--procs"),
        ({"tasks": 0}, "--tasks"),
        ({"work_ms": -1.0}, "--work-ms"),
        ({"bogus": 1}, "unknown"),
        ({"inflight": 0}, "--inflight"),
    ],
)
def test_bad_overrides_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve("throughput", **overrides)


def test_single_submits_one_task_per_request() -> None:
    assert resolve("single", inflight=4).inflight == 4
    with pytest.raises(ValueError, match="--batch 1"):
        resolve("single", batch=10)


def test_open_loop_tasks_come_from_the_rate_unless_given() -> None:
    latency = resolve("latency", quick=True)
    assert latency.tasks == 0
    assert open_loop_tasks(latency, 50.0) == round(50.0 * latency.load_seconds)
    assert open_loop_tasks(resolve("latency", tasks=123), 50.0) == 123


def test_new_record_has_every_required_key_and_is_one_json_line() -> None:
    record = new_record(resolve("throughput", quick=True), quick=True)
    assert missing_keys(record) == []
    assert set(REQUIRED_KEYS) <= record.keys()
    assert record["dispatch_latency_ms"].keys() == {"p50", "p90", "p99", "max"}
    assert record["e2e_latency_ms"].keys() == {"p50", "p90", "p99", "max"}
    assert record["cores"]
    assert record["started_at"]
    line = dumps(record)
    assert "\n" not in line
    assert orjson.loads(line)["scenario"] == "throughput"
