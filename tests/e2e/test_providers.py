"""Model-backed agents through the official `openai` and `anthropic` SDKs, against a stand-in for each
provider's HTTP API (tests/support/provider_standin.py) and a real server: answers streamed and not, the
provider's token counts as usage and cost, progress while streaming, cancel aborting the provider request,
and which provider errors are worth a retry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentplane.providers import Prompt, model_agent, provider
from agentplane.sdk import Agent
from tests.support.polling import eventually_async
from tests.support.provider_standin import ANSWER_WORDS, INPUT_TOKENS, SLOW_PIECES, ProviderStandIn
from tests.support.server import ServerProcess

WAIT = 30.0
PROVIDERS = ["openai", "anthropic"]
MODELS = {"openai": "gpt-4", "anthropic": "claude-3-haiku"}  # both in the server's default price table
PRICES = {"gpt-4": (0.03, 0.06), "claude-3-haiku": (0.00025, 0.00125)}  # USD per 1k tokens in, out
SYSTEM = "You write small, correct Python functions."
SCHEMA = {"type": "object", "properties": {"code": {"type": "string"}, "language": {"type": "string"}}}


@pytest.fixture(scope="module")
def standin() -> Iterator[ProviderStandIn]:
    stand_in = ProviderStandIn().start()
    yield stand_in
    stand_in.stop()


def agent_id(kind: str, stream: bool) -> str:
    return f"{kind}-{'stream' if stream else 'whole'}"


@pytest.fixture(scope="module")
async def agents(server: ServerProcess, standin: ProviderStandIn) -> AsyncIterator[list[Agent]]:
    """Per provider, one agent that streams and one that asks for whole answers; each serves three task
    types whose capability names the agent, so a test picks the agent by capability."""
    key = server.create_key("agent", name="providers")
    started: list[Agent] = []
    for kind in PROVIDERS:
        base_url = standin.openai_url if kind == "openai" else standin.anthropic_url
        # No retries inside the SDK here: each scenario is one provider request, and what a failure is
        # classified as is what these tests look at. A 1 s timeout makes the timeout scenario quick.
        model = provider(kind, MODELS[kind], api_key="sk-standin-key-0123456789abcdef", base_url=base_url,
                         timeout=1.0, max_retries=0)  # fmt: skip
        for stream in (True, False):
            name = agent_id(kind, stream)
            prompts = {
                f"{name}-code": Prompt("Write a function that {spec}.", system=SYSTEM, max_tokens=800),
                f"{name}-json": Prompt("Write a function that {spec}.", system=SYSTEM, schema=SCHEMA),
            }
            agent = model_agent(server.ws_url, key, model, prompts, stream=stream, agent_id=name,
                                capabilities=[name], accept_after=0.0)  # fmt: skip
            started.append(agent)
    runs = [asyncio.create_task(agent.run()) for agent in started]
    try:
        for agent in started:
            await eventually_async(lambda agent=agent: _true(agent._link is not None), timeout=WAIT)
        yield started
    finally:
        await asyncio.gather(*(agent.stop() for agent in started))
        await asyncio.gather(*runs, return_exceptions=True)


async def _true(value: object) -> bool:
    return bool(value)


async def run_task(server: ServerProcess, name: str, kind: str, spec: str, **fields: Any) -> dict[str, Any]:
    task_id = await submit(server, name, kind, spec, **fields)
    return await finished(server, task_id)


async def submit(server: ServerProcess, name: str, kind: str, spec: str, **fields: Any) -> str:
    body = {"type": f"{name}-{kind}", "capabilities": [name], "payload": {"spec": spec}, **fields}
    async with server.async_client() as client:
        response = await client.post("/api/v1/tasks", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def finished(server: ServerProcess, task_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        task = await server.task(task_id)
        return task if task["status"] in {"succeeded", "failed", "cancelled", "timed_out"} else None

    task = await eventually_async(check, timeout=WAIT)
    assert task is not None
    return task


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("kind", PROVIDERS)
async def test_answer_with_the_providers_usage(
    server: ServerProcess, standin: ProviderStandIn, agents: list[Agent], kind: str, stream: bool
) -> None:
    name = agent_id(kind, stream)
    task = await run_task(server, name, "code", f"adds two numbers ({name})")
    assert task["status"] == "succeeded", task
    assert task["result"]["text"] == "".join(ANSWER_WORDS)
    assert task["result"]["model"] == MODELS[kind]
    assert task["usage"]["input_tokens"] == INPUT_TOKENS
    assert task["usage"]["output_tokens"] == len(ANSWER_WORDS)

    request = next(seen for seen in standin.requests if f"({name})" in orjson.dumps(seen.body).decode())
    assert request.api == kind
    assert request.body["model"] == MODELS[kind]
    assert bool(request.body.get("stream")) is stream
    assert "sk-standin-key-0123456789abcdef" in request.auth
    messages = request.body["messages"]
    assert messages[-1] == {"role": "user", "content": f"Write a function that adds two numbers ({name})."}
    system = request.body.get("system") or messages[0]["content"]
    assert system == SYSTEM
    async with server.async_client() as client:
        registered = (await client.get(f"/api/v1/agents/{name}")).json()
    assert registered["model"] == MODELS[kind]


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_cost_in_usage_is_priced_from_the_reported_tokens(
    server: ServerProcess, agents: list[Agent], kind: str
) -> None:
    name = agent_id(kind, True)
    assert (await run_task(server, name, "code", "multiplies"))["status"] == "succeeded"
    async with server.async_client() as client:
        report = (await client.get("/api/v1/usage", params={"group_by": "agent"})).json()
    row = next(item for item in report["items"] if item["key"] == name)
    price_in, price_out = PRICES[MODELS[kind]]
    assert row["input_tokens"] >= INPUT_TOKENS
    assert row["output_tokens"] >= len(ANSWER_WORDS)
    expected = row["input_tokens"] / 1000 * price_in + row["output_tokens"] / 1000 * price_out
    assert row["cost"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("kind", PROVIDERS)
async def test_structured_output_is_the_parsed_json(
    server: ServerProcess, agents: list[Agent], kind: str, stream: bool
) -> None:
    task = await run_task(server, agent_id(kind, stream), "json", "subtracts")
    assert task["status"] == "succeeded", task
    assert task["result"] == {"code": "<code>", "language": "<language>"}
    assert task["usage"]["input_tokens"] == INPUT_TOKENS


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_progress_while_streaming_and_cancel_aborts_the_provider_request(
    server: ServerProcess, standin: ProviderStandIn, agents: list[Agent], kind: str
) -> None:
    name = agent_id(kind, True)
    task_id = await submit(server, name, "code", f"scenario:slow ({name})")
    async with server.async_client() as client, contextlib.AsyncExitStack() as stack:
        events = await stack.enter_async_context(client.stream("GET", f"/api/v1/tasks/{task_id}/events"))
        progress = await asyncio.wait_for(_first_progress(events.aiter_lines()), WAIT)
        assert progress["data"]["message"].endswith("tokens so far")
        assert 0 < progress["data"]["progress"] < 1
        response = await client.post(f"/api/v1/tasks/{task_id}/cancel")
        assert response.json()["status"] == "cancelled"

    request = next(seen for seen in standin.seen("slow") if f"({name})" in orjson.dumps(seen.body).decode())
    await eventually_async(lambda: _true(request.aborted), timeout=WAIT)
    assert not request.completed
    assert request.pieces_sent < SLOW_PIECES
    task = await server.task(task_id)
    assert task["status"] == "cancelled"
    assert task["result"] is None


async def _first_progress(lines: AsyncIterator[str]) -> dict[str, Any]:
    kind = ""
    async for line in lines:
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:") and kind == "progress":
            return dict(orjson.loads(line.removeprefix("data:")))
    raise AssertionError("the event stream ended without progress")


# scenario -> (error code, retryable, words of the provider's message); (streamed, whole) agents or one
FAILURES: list[tuple[str, bool | None, str, bool, str]] = [
    ("ratelimited", None, "provider_rate_limited", True, "Rate limit reached for requests (retry after 7 s)"),
    ("overloaded", None, "provider_overloaded", True, "Overloaded"),
    ("servererror", None, "provider_unavailable", True, "The server had an error"),
    ("badrequest", None, "provider_bad_request", False, "max_tokens: must be at most 4096"),
    ("unauthorized", None, "provider_auth", False, "Incorrect API key provided"),
    ("cut", True, "provider_stream_interrupted", True, "stopped after 3 pieces"),
    ("timeout", False, "provider_timeout", True, "did not answer in time"),
]


@pytest.mark.parametrize(("scenario", "streamed", "code", "retryable", "words"), FAILURES)
@pytest.mark.parametrize("kind", PROVIDERS)
async def test_provider_failures_are_classified(
    server: ServerProcess,
    agents: list[Agent],
    kind: str,
    scenario: str,
    streamed: bool | None,
    code: str,
    retryable: bool,
    words: str,
) -> None:
    modes = [True, False] if streamed is None else [streamed]
    tasks = await asyncio.gather(
        *(
            run_task(server, agent_id(kind, mode), "code", f"scenario:{scenario}", max_attempts=1)
            for mode in modes
        )
    )
    for task in tasks:
        assert task["status"] == "failed", task
        assert task["error"]["code"] == code
        assert task["error"]["retryable"] is retryable
        assert words in task["error"]["message"]


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_retryable_failure_is_retried_and_then_succeeds(
    server: ServerProcess, standin: ProviderStandIn, agents: list[Agent], kind: str
) -> None:
    spec = f"scenario:ratelimitedonce ({kind})"
    standin.requests = [seen for seen in standin.requests if seen.scenario != "ratelimitedonce"]
    task = await run_task(server, agent_id(kind, False), "code", spec, max_attempts=2)
    assert task["status"] == "succeeded", task
    assert task["attempt"] == 2
    assert len(standin.seen("ratelimitedonce")) == 2


async def test_a_payload_without_the_prompts_field_fails_for_good(
    server: ServerProcess, agents: list[Agent]
) -> None:
    async with server.async_client() as client:
        body = {"type": "openai-stream-code", "capabilities": ["openai-stream"], "payload": {"other": 1}}
        task_id = (await client.post("/api/v1/tasks", json=body)).json()["id"]
    task = await finished(server, task_id)
    assert task["error"]["code"] == "invalid_payload"
    assert task["error"]["retryable"] is False
    assert "'spec'" in task["error"]["message"]


def start_agent_command(args: list[str], key: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agentplane", "agent", *args],
            env={**env, "AGENTPLANE_KEY": key}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def test_the_shipped_example_runs_from_its_spec(
    server: ServerProcess, standin: ProviderStandIn, tmp_path: Path
) -> None:
    """`agentplane agent --spec examples/agents.yaml`, pointed at the stand-in instead of Ollama."""
    example = (Path(__file__).parents[2] / "examples" / "agents.yaml").read_text()
    assert "base_url: http://127.0.0.1:11434/v1" in example
    spec = tmp_path / "agents.yaml"
    spec.write_text(example.replace("http://127.0.0.1:11434/v1", standin.openai_url))
    key = server.create_key("agent", name="example")
    args = ["--spec", str(spec), "--url", server.base_url]
    process = start_agent_command(args, key, tmp_path / "agent.log")
    try:
        body = {
            "type": "code-review",
            "capabilities": ["code-review"],
            "payload": {"language": "Python", "code": "def f(): pass"},
        }
        async with server.async_client() as client:
            response = await client.post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        task = await finished(server, response.json()["id"])
        assert task["status"] == "succeeded", (task, (tmp_path / "agent.log").read_text())
        assert task["agent_id"] == "code-generator-1"
        assert task["result"]["text"] == "".join(ANSWER_WORDS)
        request = standin.requests[-1]
        assert request.body["model"] == "qwen2.5-coder:7b"
        assert request.body["messages"][-1]["content"] == "Review this Python code:\n\ndef f(): pass"
    finally:
        process.terminate()
        process.wait(15)
