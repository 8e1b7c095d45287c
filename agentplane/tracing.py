"""OpenTelemetry for the server and the SDK: off unless the standard OTEL_* environment configures it.

Tracing is on in a process when ``OTEL_SDK_DISABLED`` is not ``true`` and either ``OTEL_TRACES_EXPORTER``
names an exporter other than ``none`` or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). OpenTelemetry's own default exporter is `otlp` to localhost; we
ask for an explicit setting instead, so that installing the packages never starts exporting by itself.
Everything else is OpenTelemetry's: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (the resource),
``OTEL_TRACES_SAMPLER``/``_ARG`` (the sampler), ``OTEL_BSP_*`` (the batch processor),
``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout). The OTLP exporter is the HTTP/protobuf one.

An agent process whose application has already installed an OpenTelemetry SDK TracerProvider is traced
through that provider, without any OTEL_* setting.

OpenTelemetry is imported only when tracing is on: the SDK must import without it (the `tracing` extra),
and a process with tracing off pays nothing but the ``tracer(...) is None`` branch at each span site.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentplane import tracecontext

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

logger = logging.getLogger("agentplane.tracing")

_UNSET = object()
_provider: Any = _UNSET  # this process's TracerProvider once decided (None: tracing is off)


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* environment asks for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def _host_provider() -> Any:
    """A TracerProvider the application installed itself, if OpenTelemetry is loaded and it did."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider) else provider


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    exporters: list[Any] = []
    for name in names:
        if name == "otlp":
            protocol = environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
            )
            if protocol.strip() not in ("", "http/protobuf"):
                logger.warning(
                    "OTLP protocol %r is not supported here; exporting with http/protobuf", protocol
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            logger.warning("unknown OTEL_TRACES_EXPORTER %r ignored (supported: otlp, console, none)", name)
    return exporters


def _setup(service_name: str, environ: Mapping[str, str]) -> Any:
    host = _host_provider()
    if host is not None:
        return host
    if not configured(environ):
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "OTEL_* asks for tracing but OpenTelemetry is not installed (pip install 'agentplane[tracing]'); "
            "tracing is off"
        )
        return None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over this default (Resource.create reads them).
    resource = Resource.create({"service.name": service_name}).merge(Resource.create())
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
    for exporter in _exporters(environ):
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*; flushed at exit
    trace.set_tracer_provider(provider)
    return provider


def tracer(name: str, service_name: str, environ: Mapping[str, str] = os.environ) -> Tracer | None:
    """This process's tracer for ``name``, set up on first use; None when tracing is off."""
    global _provider
    if _provider is _UNSET:
        _provider = _setup(service_name, environ)
    if _provider is None:
        return None
    result: Tracer = _provider.get_tracer(name)
    return result


def parent(traceparent: str | None) -> Context:
    """An OpenTelemetry context whose remote parent is ``traceparent``; an empty one (a new trace, whatever
    span is current) when it is missing or invalid. Only called with tracing on."""
    from opentelemetry import trace
    from opentelemetry.context import Context

    parsed = tracecontext.parse(traceparent)
    if parsed is None:
        return Context()

    remote = trace.SpanContext(
        trace_id=parsed.trace_id,
        span_id=parsed.span_id,
        is_remote=True,
        trace_flags=trace.TraceFlags(parsed.flags),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(remote))


def traceparent_of(span: Span) -> str:
    """The `traceparent` naming ``span`` as the parent."""
    context = span.get_span_context()
    return tracecontext.TraceParent(context.trace_id, context.span_id, int(context.trace_flags)).header()


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, for log lines; None without one. Only call with tracing
    on (it imports OpenTelemetry)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
