"""Tracing end to end (issue 18): a real server process and a real model-backed agent process (`agentplane
agent --spec`, against the provider stand-in), each exporting with OpenTelemetry's real OTLP/HTTP exporter to
a receiver in this test (tests/support/otlp.py); the client's span is recorded by OpenTelemetry's in-memory
exporter here, and its `traceparent` goes out with OpenTelemetry's own W3C propagator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.support.otlp import OtlpReceiver, Span
from tests.support.provider_standin import ProviderStandIn
from tests.support.server import ServerProcess

MODEL = "gpt-4"
SPEC = """agents:
  - id: traced-1
    provider: openai
    model: {model}
    base_url: {base_url}
    capabilities: [text]
    max_retries: 0
    tasks:
      summarize:
        prompt: "Summarize {{lines}}"
        max_tokens: 64
      combine:
        prompt: "Combine {{outputs}}"
        max_tokens: 64
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    yield otlp
    otlp.stop()


@pytest.fixture(scope="module")
def standin() -> Iterator[ProviderStandIn]:
    stand_in = ProviderStandIn().start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def server(
    receiver: OtlpReceiver, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        **receiver.env("agentplane-server"),
        "AGENT_RETRY_BACKOFF": "0.1s",
        "AGENTPLANE_LOG_FORMAT": "json",
    }
    proc = ServerProcess(database_url, env=env, log_dir=tmp_path_factory.mktemp("logs"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def agent(
    server: ServerProcess,
    receiver: OtlpReceiver,
    standin: ProviderStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    folder = tmp_path_factory.mktemp("agent")
    spec = folder / "agents.yaml"
    spec.write_text(SPEC.format(model=MODEL, base_url=standin.openai_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_", "OTEL_"))}
    env.update(receiver.env("agentplane-agent"), AGENTPLANE_KEY=server.create_key("agent", name="traced"))
    log_path = folder / "agent.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentplane", "agent", "--spec", str(spec), "--url", server.base_url],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with server.client() as admin:
            deadline = time.monotonic() + 30
            while admin.get("/api/v1/agents/traced-1").status_code != 200:
                assert time.monotonic() < deadline, log_path.read_text()
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture
def client_spans() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    """The client's side: OpenTelemetry's in-memory exporter (a provider of our own, not the global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test-client"), exporter
    provider.shutdown()


def traced_post(tracer: Tracer, client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    with tracer.start_as_current_span("client request"):
        headers: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(headers)  # the current span, as a W3C traceparent
        return client.post(path, json=body, headers=headers)


def client_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def chain(spans: list[Span], leaf: Span) -> list[str]:
    """The names from ``leaf`` up to the root, as "service:name"; the client's span is not exported here."""
    by_id = {span.span_id: span for span in spans}
    names, span = [], leaf
    while True:
        names.append(f"{span.service}:{span.name}")
        parent = by_id.get(span.parent_id)
        if parent is None:
            return names[::-1]
        span = parent


def summarize(lines: list[str]) -> dict[str, Any]:
    return {"type": "summarize", "capabilities": ["text"], "payload": {"lines": lines}}


def test_one_task_is_one_trace_from_the_client_to_the_model_call(
    server: ServerProcess, agent: None, receiver: OtlpReceiver, client_spans: Any
) -> None:
    tracer, exporter = client_spans
    with server.client() as client:
        response = traced_post(tracer, client, "/api/v1/tasks", summarize(["one line"]))
        assert response.status_code == 201, response.text
        task = client.get(f"/api/v1/tasks/{response.json()['id']}", params={"wait": 30}).json()
    assert task["status"] == "succeeded", task
    root = client_span(exporter)
    trace_id = f"{root.context.trace_id:032x}"
    assert response.json()["trace_id"] == trace_id == task["trace_id"]

    spans = receiver.wait_for(trace_id, {"task.result": 1, f"chat {MODEL}": 1})
    (call,) = [s for s in spans if s.name == f"chat {MODEL}"]
    assert chain(spans, call) == [
        "agentplane-server:POST /api/v1/tasks",  # FastAPI's request span, a child of the client's
        "agentplane-server:task.submit",
        "agentplane-server:task.queue",
        "agentplane-server:task.dispatch",
        "agentplane-agent:handle summarize",
        f"agentplane-agent:chat {MODEL}",
    ]
    by_name = {s.name: s for s in spans}
    assert by_name["POST /api/v1/tasks"].parent_id == f"{root.context.span_id:016x}"  # the client's span
    # The GenAI semantic conventions on the provider call.
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.request.model"] == MODEL
    assert call.attributes["gen_ai.usage.input_tokens"] == task["usage"]["input_tokens"] > 0
    assert call.attributes["gen_ai.usage.output_tokens"] == task["usage"]["output_tokens"] > 0
    assert call.attributes["gen_ai.response.finish_reasons"] == [task["result"]["stop_reason"]]
    # The result committed, under the attempt's dispatch; the handler ran under it too.
    assert by_name["task.result"].parent_id == by_name["task.dispatch"].span_id
    assert by_name["task.result"].attributes["agentplane.task.status"] == "succeeded"
    assert "assign sent" in by_name["task.dispatch"].events
    assert by_name["task.dispatch"].attributes["agentplane.task.id"] == task["id"]


def test_a_retried_task_shows_both_attempts(
    server: ServerProcess, agent: None, receiver: OtlpReceiver, standin: ProviderStandIn, client_spans: Any
) -> None:
    """The stand-in answers the first request 429: the attempt fails retryable, the second succeeds."""
    tracer, exporter = client_spans
    with server.client() as client:
        response = traced_post(tracer, client, "/api/v1/tasks", summarize(["scenario:ratelimitedonce"]))
        assert response.status_code == 201, response.text
        task = client.get(f"/api/v1/tasks/{response.json()['id']}", params={"wait": 30}).json()
    assert (task["status"], task["attempt"]) == ("succeeded", 2), task
    trace_id = f"{client_span(exporter).context.trace_id:032x}"
    assert task["trace_id"] == trace_id

    spans = receiver.wait_for(trace_id, {"task.result": 2, f"chat {MODEL}": 2, "handle summarize": 2})
    submit = [s for s in spans if s.name == "task.submit"]
    assert len(submit) == 1  # one task, one trace, both attempts in it
    dispatches = sorted(
        (s for s in spans if s.name == "task.dispatch"), key=lambda s: s.attributes["agentplane.task.attempt"]
    )
    assert [d.attributes["agentplane.task.attempt"] for d in dispatches] == [1, 2]
    for dispatch in dispatches:
        assert chain(spans, dispatch) == [
            "agentplane-server:POST /api/v1/tasks",
            "agentplane-server:task.submit",
            "agentplane-server:task.queue",
            "agentplane-server:task.dispatch",
        ]
    results = {s.parent_id: s for s in spans if s.name == "task.result"}
    first, second = (results[d.span_id] for d in dispatches)
    assert "retry scheduled" in first.events
    assert first.attributes["agentplane.task.status"] == "pending"
    assert second.attributes["agentplane.task.status"] == "succeeded"
    calls = {s.parent_id: s for s in spans if s.name == f"chat {MODEL}"}
    handlers = {s.parent_id: s for s in spans if s.name == "handle summarize"}
    failed_call = calls[handlers[dispatches[0].span_id].span_id]
    assert failed_call.attributes["error.type"] == "provider_rate_limited"
    assert failed_call.status_code == 2  # ERROR
    assert handlers[dispatches[0].span_id].attributes["error.type"] == "provider_rate_limited"
    assert "gen_ai.usage.output_tokens" in calls[handlers[dispatches[1].span_id].span_id].attributes


def test_a_map_reduce_session_is_one_tree(
    server: ServerProcess, agent: None, receiver: OtlpReceiver, client_spans: Any
) -> None:
    tracer, exporter = client_spans
    body = {
        "strategy": "map_reduce",
        "task": {"type": "summarize", "capabilities": ["text"], "payload": {"lines": ["a", "b", "c", "d"]}},
        "participants": {"capabilities": ["text"]},
        "params": {
            "split_field": "lines", "chunk_size": 2, "reducer": "agent",
            "reduce_capability": "text", "reduce_type": "combine",
        },
    }  # fmt: skip
    with server.client() as client:
        response = traced_post(tracer, client, "/api/v1/sessions", body)
        assert response.status_code == 201, response.text
        session_id = response.json()["id"]
        deadline = time.monotonic() + 30
        while (session := client.get(f"/api/v1/sessions/{session_id}").json())["status"] == "running":
            assert time.monotonic() < deadline, session
            time.sleep(0.1)
    assert session["status"] == "succeeded", session
    root = client_span(exporter)
    trace_id = f"{root.context.trace_id:032x}"
    assert session["trace_id"] == trace_id
    subtasks = session["subtasks"]
    assert len(subtasks) == 3  # two map chunks and the reduce

    spans = receiver.wait_for(trace_id, {"handle summarize": 2, "handle combine": 1, "session.finish": 1})
    # One tree: every span reaches the request's span (FastAPI's), whose parent is the client's; below it,
    # everything is under the session's span.
    (request,) = [s for s in spans if s.name == "POST /api/v1/sessions"]
    assert request.parent_id == f"{root.context.span_id:016x}"
    for span in spans:
        path = chain(spans, span)
        assert path[0] == "agentplane-server:POST /api/v1/sessions", path
        assert path[1:2] in ([], ["agentplane-server:session.create"]), path
    # Each subtask is a child of the step that submitted it: the map step's two, then the reduce step's one.
    steps = sorted((s for s in spans if s.name == "session.step"), key=lambda s: s.start_ns)
    assert [s.attributes["agentplane.session.subtasks"] for s in steps] == [2, 1]
    for task_type, step in (("summarize", steps[0]), ("combine", steps[1])):
        queues = [
            s for s in spans if s.name == "task.queue" and s.attributes["agentplane.task.type"] == task_type
        ]
        assert queues
        assert all(q.parent_id == step.span_id for q in queues)
    handlers = [s for s in spans if s.name.startswith("handle ")]
    assert all(chain(spans, h)[-3:-1] == ["agentplane-server:task.queue", "agentplane-server:task.dispatch"]
               for h in handlers)  # fmt: skip
    with server.client() as client:
        for subtask in subtasks:
            assert client.get(f"/api/v1/tasks/{subtask['task_id']}").json()["trace_id"] == trace_id


def test_a_task_without_traceparent_starts_its_own_trace(
    server: ServerProcess, agent: None, receiver: OtlpReceiver
) -> None:
    with server.client() as client:
        # An invalid header is ignored, as W3C asks of a receiver: a new trace, not an error.
        response = client.post("/api/v1/tasks", json=summarize(["x"]), headers={"traceparent": "00-zz-1-01"})
        assert response.status_code == 201, response.text
        task = client.get(f"/api/v1/tasks/{response.json()['id']}", params={"wait": 30}).json()
    assert task["status"] == "succeeded"
    trace_id = task["trace_id"]
    assert len(trace_id) == 32
    assert int(trace_id, 16) != 0
    spans = receiver.wait_for(trace_id, {"task.submit": 1, "handle summarize": 1})
    (request,) = [s for s in spans if s.name == "POST /api/v1/tasks"]
    assert request.parent_id == ""  # the root of its own trace


def test_a_malformed_traceparent_in_the_body_is_refused_by_field(server: ServerProcess) -> None:
    body = {
        "tasks": [
            summarize(["x"]),
            {**summarize(["y"]), "traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"},
        ]
    }
    with server.client() as client:
        response = client.post("/api/v1/tasks:batch", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    (error,) = response.json()["errors"]
    assert error["field"] == "tasks.1.traceparent"
    assert "trace id must not be all zeros" in error["message"]


def test_batch_tasks_each_continue_their_own_traceparent(
    server: ServerProcess, agent: None, receiver: OtlpReceiver
) -> None:
    parents = [f"00-{n:032x}-{n:016x}-01" for n in (0xA1, 0xA2)]
    body = {"tasks": [{**summarize([str(n)]), "traceparent": p} for n, p in enumerate(parents)]}
    with server.client() as client:
        response = client.post("/api/v1/tasks:batch", json=body)
        assert response.status_code == 201, response.text
        tasks = response.json()["tasks"]
    assert [t["trace_id"] for t in tasks] == [p[3:35] for p in parents]
    for parent, task in zip(parents, tasks, strict=True):
        spans = receiver.wait_for(task["trace_id"], {"task.submit": 1, "handle summarize": 1})
        (submit,) = [s for s in spans if s.name == "task.submit"]
        assert submit.parent_id == parent[36:52]
        assert submit.attributes["agentplane.task.id"] == task["id"]
