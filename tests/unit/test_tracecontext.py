"""W3C Trace Context parsing (agentplane.tracecontext), the OTEL_* switch (agentplane.tracing) and trace ids
in JSON logs (app.logs)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from agentplane import tracecontext, tracing
from app import logs

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_round_trips() -> None:
    parsed = tracecontext.parse(VALID)
    assert parsed is not None
    assert parsed.trace_id_hex == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parsed.span_id == 0x00F067AA0BA902B7
    assert parsed.sampled
    assert parsed.header() == VALID
    assert tracecontext.trace_id_of(VALID) == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "expected"),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "expected"),  # uppercase
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff"),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace id must not be all zeros"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent id must not be all zeros"),
        (VALID + "-extra", "exactly 55"),  # version 00 has no more fields
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", "unexpected characters"),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "expected"),  # a digit short
    ],
)
def test_an_invalid_traceparent_is_named_and_ignored(value: str, reason: str) -> None:
    problem = tracecontext.problem(value)
    assert problem is not None
    assert reason in problem
    assert tracecontext.parse(value) is None


def test_a_later_version_is_read_as_version_00_and_written_as_00() -> None:
    later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future-holds"
    parsed = tracecontext.parse(f" {later}\t")  # HTTP's optional whitespace around it
    assert parsed is not None
    # Only the sampled flag is defined: the other bits are not passed on.
    assert parsed.header() == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_an_unsampled_parent_stays_unsampled() -> None:
    parsed = tracecontext.parse(VALID[:-2] + "00")
    assert parsed is not None
    assert not parsed.sampled
    assert parsed.header().endswith("-00")


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, False),
        ({"OTEL_SERVICE_NAME": "agentplane"}, False),  # naming the service exports nothing
    ],
)
def test_tracing_is_on_only_when_otel_configures_an_exporter(environ: dict[str, str], on: bool) -> None:
    assert tracing.configured(environ) is on


@pytest.fixture
def trace_ids_in_logs() -> Iterator[None]:
    logs.enable_trace_ids(tracing.current_ids)
    yield
    logs._trace_ids = None


def _line(message: str) -> dict[str, str]:
    record = logging.LogRecord("app.test", logging.INFO, __file__, 1, message, None, None)
    parsed: dict[str, str] = json.loads(logs.JsonFormatter().format(record))
    return parsed


def test_json_logs_carry_the_current_span(trace_ids_in_logs: None) -> None:
    tracer = TracerProvider().get_tracer("test")  # its own provider: the global one is left alone
    with tracer.start_as_current_span("work") as span:
        inside = _line("inside")
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    outside = _line("outside")
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_json_logs_have_no_trace_fields_with_tracing_off() -> None:
    assert logs._trace_ids is None  # the server sets it only when tracing is on (app.tracing.setup)
    with TracerProvider().get_tracer("test").start_as_current_span("work"):
        line = _line("a line")
    assert "trace_id" not in line
