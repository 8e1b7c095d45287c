"""The Grafana dashboard and the Prometheus alert rules name only metrics the app really exports.

The exported names come from live registries (a real `app.metrics.Metrics()` and a real
prometheus-fastapi-instrumentator), never from a hand-kept list, so renaming a collector breaks this test.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator

from app.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "agentplane.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DATASOURCE_UID = "prometheus"
TEMPO_UID = "tempo"
# Series Prometheus itself writes for every scrape target. Alert rules may use them (a "target down" alert
# needs `up`); the dashboard may not, it shows only what the app exports.
PROMETHEUS_TARGET_SERIES = frozenset({"up"})

Json = dict[str, Any]

# ---------------------------------------------------------------------------------------- exported names

# The sample names prometheus_client exposes for each family type. `family.name` has the suffixes stripped
# (a Counter "x_total" is the family "x"), and a labelled family with no children yet has no samples, so the
# names are derived from the type rather than read from the samples alone.
_SAMPLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def sample_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def instrumentator_sample_names() -> set[str]:
    """The HTTP metrics, read from a real instrumented app (the instrumentator creates its collectors when
    the middleware stack is built)."""
    registry = CollectorRegistry()
    app = FastAPI()
    Instrumentator(registry=registry, should_group_status_codes=False).instrument(app)
    app.build_middleware_stack()
    return sample_names(registry)


@pytest.fixture(scope="module")
def exported() -> frozenset[str]:
    http = instrumentator_sample_names()
    assert "http_requests_total" in http, (
        "the instrumentator registered no metrics; was its middleware built?"
    )
    return frozenset(sample_names(Metrics().registry) | http)


# ---------------------------------------------------------------------------------------- PromQL tokens


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_AGGREGATIONS = _words(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio"
)
_KEYWORDS = _words("by without on ignoring group_left group_right bool and or unless offset atan2 inf nan")
_FUNCTIONS = _words(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp clamp_max
    clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg delta deriv
    double_exponential_smoothing end exp floor histogram_avg histogram_count histogram_fraction
    histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase info
    irate label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time
    minute month pi predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin
    sinh sort sort_by_label sort_by_label_desc sort_desc sqrt start stddev_over_time stdvar_over_time
    sum_over_time tan tanh time timestamp vector year
    """
)
_NOT_METRICS = _AGGREGATIONS | _KEYWORDS | _FUNCTIONS

_STRING = r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`"""
_MATCHERS = re.compile(r"\{(?:[^{}\"'`]|" + _STRING + r")*\}")
_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_STRINGS = re.compile(_STRING)
_BRACKETS = re.compile(r"\[[^\]]*\]")  # ranges [5m], subqueries [1h:1m], Grafana's [$__rate_interval]
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE)
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
# An identifier not glued to a number (`5m`, `1e3`, `0x1f`) nor to a preceding name character.
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    names: set[str] = set()

    def matchers(match: re.Match[str]) -> str:
        for named in _NAME_MATCHER.finditer(match.group(0)):
            names.add(named.group(1) or named.group(2))
        return " "

    text = _MATCHERS.sub(matchers, expr)
    for pattern in (_STRINGS, _BRACKETS, _LABEL_LISTS, _VARIABLES):
        text = pattern.sub(" ", text)
    names.update(token for token in _IDENTIFIER.findall(text) if token.lower() not in _NOT_METRICS)
    return names


# ---------------------------------------------------------------------------------------- the files


def load_dashboard() -> Json:
    dashboard: Json = json.loads(DASHBOARD.read_text())
    return dashboard


def load_rules() -> list[Json]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def all_panels(panels: Iterable[Json]) -> Iterator[Json]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs(dashboard: Json) -> Iterator[tuple[str, str]]:
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield (
                    f"panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')}",
                    target["expr"],
                )


def rule_exprs(rules: Iterable[Json]) -> Iterator[tuple[str, str]]:
    for rule in rules:
        yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]


def unknown_metrics(exprs: Iterable[tuple[str, str]], known: Iterable[str]) -> dict[str, set[str]]:
    """Where each expression names a metric outside `known`: {location: {unknown names}}."""
    allowed = set(known)
    report: dict[str, set[str]] = {}
    for where, expr in exprs:
        unknown = metric_names(expr) - allowed
        if unknown:
            report[where] = unknown
    return report


# ---------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{status=~"x|y"}[5m])))',
            {"a_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[$__rate_interval])) / sum without (instance) (b) >0.5 and on (job) c offset 5m",
            {"a_total", "b", "c"},
        ),
        ('(sum(x{le="+Inf", job="by(z)"}) or vector(0)) == 0', {"x"}),
        ('{__name__="named_metric", job="x"}', {"named_metric"}),
        ('label_replace(up, "dst", "$1", "src", "(.*)")', {"up"}),
        ("max_over_time(q[1h:5m]) * 1e3 - Inf + ${threshold}", {"q"}),
        ("sum(rate(x[5m])) BY (le, model) > bool 0x1f", {"x"}),
        ('count_values("model", m) unless ignoring (a) group_left (b) n', {"m", "n"}),
        ("sum(increase(cost_total[$__range])) * 3600", {"cost_total"}),
    ],
)
def test_tokenizer_finds_the_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exported_names_include_every_sample_form(exported: frozenset[str]) -> None:
    # A counter's _total, a histogram's series, a gauge, and the instrumentator's HTTP metrics.
    for name in (
        "mcp_agents_registered_total",
        "mcp_task_execution_duration_seconds_bucket",
        "mcp_task_execution_duration_seconds_count",
        "mcp_agents_active",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "http_request_duration_highr_seconds_bucket",
        "http_request_size_bytes_sum",
    ):
        assert name in exported
    assert "mcp_agents_registered" not in exported  # the family name alone is no series


def test_every_dashboard_query_names_an_exported_metric(exported: frozenset[str]) -> None:
    exprs = list(dashboard_exprs(load_dashboard()))
    assert len(exprs) > 20
    assert unknown_metrics(exprs, exported) == {}


def test_the_check_catches_an_unknown_metric(exported: frozenset[str]) -> None:
    dashboard = copy.deepcopy(load_dashboard())
    panel = next(p for p in all_panels(dashboard["panels"]) if p.get("targets"))
    panel["targets"][0]["expr"] = 'sum by (model) (rate(agentplane_no_such_metric_total{model="x"}[5m]))'

    report = unknown_metrics(dashboard_exprs(dashboard), exported)

    assert list(report.values()) == [{"agentplane_no_such_metric_total"}]
    assert f"panel {panel['id']} " in next(iter(report))


def test_every_alert_rule_names_an_exported_metric(exported: frozenset[str]) -> None:
    rules = load_rules()
    assert len(rules) >= 6
    assert unknown_metrics(rule_exprs(rules), exported | PROMETHEUS_TARGET_SERIES) == {}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_panels_have_titles_datasources_and_unique_ids() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel.get("title"), f"panel {panel['id']} has no title"
        grid = panel["gridPos"]
        assert grid["w"] > 0, panel["title"]
        assert 0 <= grid["x"] <= 24 - grid["w"], panel["title"]
        if panel["type"] == "row" or panel.get("datasource", {}).get("uid") == TEMPO_UID:
            continue  # trace panels: test_trace_panels_query_spans_the_server_emits
        assert panel.get("datasource", {}).get("uid") == DATASOURCE_UID, panel["title"]
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        assert len({target["refId"] for target in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", {}).get("uid") == DATASOURCE_UID, panel["title"]
    titles = {panel["title"] for panel in panels if panel["type"] == "row"}
    assert titles >= {
        "Fleet", "Throughput & latency", "Queue", "Cost & tokens", "Sessions", "Health", "HTTP", "Traces"
    }  # fmt: skip


def test_trace_panels_query_spans_the_server_emits() -> None:
    """The slow-task table (Tempo) names span names app/tracing.py really writes, and the Tempo data
    source the stack provisions."""
    tracing_source = (ROOT / "app" / "tracing.py").read_text()
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/tempo.yml").read_text())
    assert [source["uid"] for source in provisioned["datasources"]] == [TEMPO_UID]
    panels = [
        p for p in all_panels(load_dashboard()["panels"]) if p.get("datasource", {}).get("uid") == TEMPO_UID
    ]
    assert panels, "no panel links slow tasks to their traces"
    for panel in panels:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == TEMPO_UID
            assert target["queryType"] == "traceql"
            names = re.findall(r'name = "([^"]+)"', target["query"])
            assert names, target["query"]
            for name in names:
                assert f'"{name}"' in tracing_source, f"{panel['title']}: no span is named {name!r}"


# ---------------------------------------------------------------------------------------- promtool


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not on PATH (Debian/Ubuntu: apt-get install prometheus)")
    return path


def run_promtool(*args: str) -> None:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_rules() -> None:
    run_promtool("check", "rules", str(RULES))


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # Grafana's variables become plain durations so that Prometheus's own parser can judge each query.
    grafana_variables = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
    rules = []
    for panel in all_panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") == TEMPO_UID:
                continue  # TraceQL, not PromQL
            expr = target["expr"]
            for variable, value in grafana_variables.items():
                expr = expr.replace(variable, value)
            rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


def _firing(alert: str, **labels: str) -> Json:
    pairs = {"alertname": alert, "alertstate": "firing", **labels}
    return {"labels": "ALERTS{" + ", ".join(f'{k}="{v}"' for k, v in pairs.items()) + "}", "value": 1}


def test_promtool_alerts_fire_on_a_troubled_fleet_and_not_on_a_healthy_one(tmp_path: Path) -> None:
    healthy = [
        {"series": 'mcp_agents_active{model="gpt-4", status="active"}', "values": "3x30"},
        {"series": 'agentplane_tasks_queue_depth{status="pending"}', "values": "20x30"},
        {"series": 'agentplane_tasks_queue_depth{status="running"}', "values": "500x30"},
        {"series": 'agentplane_tasks_finished_total{task_type="t", status="succeeded"}', "values": "0+60x30"},
        {"series": 'agentplane_tasks_finished_total{task_type="t", status="failed"}', "values": "0+1x30"},
        {"series": 'agentplane_tasks_finished_total{task_type="t", status="cancelled"}', "values": "0+60x30"},
        {
            "series": 'agentplane_dispatch_latency_seconds_bucket{task_type="t", le="0.005"}',
            "values": "0+99x30",
        },
        {
            "series": 'agentplane_dispatch_latency_seconds_bucket{task_type="t", le="0.01"}',
            "values": "0+100x30",
        },
        {
            "series": 'agentplane_dispatch_latency_seconds_bucket{task_type="t", le="+Inf"}',
            "values": "0+100x30",
        },
        {"series": 'agentplane_health_check_failures_total{model="gpt-4"}', "values": "0+0x30"},
        {"series": 'up{job="agentplane", instance="app:8080"}', "values": "1x30"},
    ]
    troubled = [
        {"series": 'mcp_agents_active{model="gpt-4", status="offline"}', "values": "3x30"},
        {"series": 'agentplane_tasks_queue_depth{status="pending"}', "values": "150x30"},
        {"series": 'agentplane_tasks_finished_total{task_type="t", status="succeeded"}', "values": "0+30x30"},
        {"series": 'agentplane_tasks_finished_total{task_type="t", status="failed"}', "values": "0+6x30"},
        {"series": 'agentplane_tasks_finished_total{task_type="t", status="timed_out"}', "values": "0+2x30"},
        {
            "series": 'agentplane_dispatch_latency_seconds_bucket{task_type="t", le="0.5"}',
            "values": "0+50x30",
        },
        {"series": 'agentplane_dispatch_latency_seconds_bucket{task_type="t", le="1"}', "values": "0+90x30"},
        {
            "series": 'agentplane_dispatch_latency_seconds_bucket{task_type="t", le="2.5"}',
            "values": "0+100x30",
        },
        {
            "series": 'agentplane_dispatch_latency_seconds_bucket{task_type="t", le="+Inf"}',
            "values": "0+100x30",
        },
        {"series": 'agentplane_health_check_failures_total{model="gpt-4"}', "values": "0+1x30"},
        {"series": 'up{job="agentplane", instance="app:8080"}', "values": "0x30"},
    ]
    firing = 'ALERTS{alertstate="firing"}'
    unit_tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": healthy,
                "promql_expr_test": [{"expr": firing, "eval_time": "25m", "exp_samples": []}],
            },
            {
                "interval": "1m",
                "input_series": troubled,
                "promql_expr_test": [
                    {
                        "expr": firing,
                        "eval_time": "25m",
                        "exp_samples": [
                            _firing(
                                "AgentplaneTargetDown",
                                instance="app:8080",
                                job="agentplane",
                                severity="critical",
                            ),
                            _firing("AgentplaneNoActiveAgents", severity="critical"),
                            _firing("AgentplaneQueueBacklog", severity="warning"),
                            _firing("AgentplaneTaskFailureRatioHigh", severity="warning"),
                            _firing("AgentplaneDispatchLatencyHigh", severity="warning"),
                            _firing("AgentplaneHealthCheckFailuresRising", model="gpt-4", severity="warning"),
                            _firing("AgentplaneTasksTimingOut", task_type="t", severity="warning"),
                        ],
                    }
                ],
            },
        ],
    }
    path = tmp_path / "rules-test.yml"
    path.write_text(yaml.safe_dump(unit_tests, sort_keys=False))
    run_promtool("test", "rules", str(path))
