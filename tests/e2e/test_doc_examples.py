"""Every example in README.md and docs/*.md runs as written against a real server and the demo agent.

What counts as an example (so a new one is covered by default):

- every fenced ``bash``, ``sh`` or ``console`` block (for ``console``, the ``$ `` lines and their ``\\``
  continuations);
- every fenced ``json`` block whose nearest non-blank line above names a request, ``POST /api/v1/…`` (or PUT,
  PATCH, DELETE): it is sent as that request's body, with the admin key.

A block that cannot run here says so on the nearest non-blank line above it, with a reason:
``<!-- example: skip (needs docker) -->``. The test reports the reason; a marker without one fails.

The only substitutions, the same for every example:

- ``127.0.0.1:8080`` and ``localhost:8080`` become this module's server, ``127.0.0.1:<port>``;
- the key placeholder ``ap_...`` (or ``ap_…``) becomes the server's admin key;
- ``AGENTPLANE_URL`` and ``AGENTPLANE_KEY`` are set to the same two, as README's "Try it" leaves them,
  unless the block sets them itself.

Shell blocks run under ``bash -euo pipefail`` in a scratch directory where ``agentplane`` and
``.venv/bin/agentplane`` are this checkout's CLI, with no other AGENTPLANE_*/AGENT_* variable set; what a
block sends to the background (``&``) is stopped when the block ends. An example succeeds when it exits 0
within ``BLOCK_TIMEOUT``, prints no problem document (``curl -s`` prints a 4xx body and exits 0), and every
task or session it printed or created ends ``succeeded``.

One demo agent (``agentplane agent --demo``) serves the module. A block that starts its own demo agent runs
without it, so the example's own agent is the one that must do the work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_procs import AgentProcess
from tests.support.polling import eventually
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"bash", "sh", "console"}
BLOCK_TIMEOUT = 60.0
MODULE_AGENT = "docs-demo"

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*example:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"^\s*skip\s*\((?P<reason>.*)\)\s*$")
_REQUEST = re.compile(r"\b(?P<method>POST|PUT|PATCH|DELETE) (?P<path>/api/v1/[^\s`]*)")
_HOST = re.compile(r"\b(?:localhost|127\.0\.0\.1):8080\b")
_KEY = re.compile(r"\bap_(?:\.\.\.|…)")


@dataclass(frozen=True)
class Example:
    doc: str  # relative to the repository
    line: int  # the opening fence, 1-based
    lang: str
    text: str
    marker: str | None  # the body of an `<!-- example: … -->` just above, if any
    request: tuple[str, str] | None  # (method, path) a json block is the body of

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def _examples(path: Path) -> tuple[list[Example], list[int]]:
    """The examples of one document, and the lines of markers that stand before no example."""
    lines = path.read_text().splitlines()
    doc = str(path.relative_to(ROOT))
    found: list[Example] = []
    used: set[int] = set()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(opening["fence"]):
            end += 1
        lang = opening["lang"].lower()
        above = next((n for n in range(index - 1, -1, -1) if lines[n].strip()), None)
        above_text = lines[above] if above is not None else ""
        marker = _MARKER.match(above_text)
        request = _REQUEST.search(above_text)
        if lang in SHELLS or (lang == "json" and (request or marker)):
            if marker and above is not None:
                used.add(above)
            found.append(
                Example(
                    doc,
                    index + 1,
                    lang,
                    "\n".join(line.removeprefix(opening["indent"]) for line in lines[index + 1 : end]),
                    marker["body"].strip() if marker else None,
                    (request["method"], request["path"]) if request else None,
                )
            )
        index = end + 1
    stray = [n + 1 for n, line in enumerate(lines) if _MARKER.match(line) and n not in used]
    return found, stray


def _all_examples() -> list[Example]:
    return [example for doc in DOCS for example in _examples(doc)[0]]


EXAMPLES = _all_examples()


def _console_commands(text: str) -> str:
    """The commands of a console transcript: `$ ` lines and the lines their trailing backslash continues."""
    commands: list[str] = []
    continued = False
    for line in text.splitlines():
        if continued or line.startswith("$ "):
            commands.append(line if continued else line[2:])
            continued = line.rstrip().endswith("\\")
    return "\n".join(commands)


def _substitute(text: str, server: ServerProcess) -> str:
    return _KEY.sub(server.admin_key, _HOST.sub(f"127.0.0.1:{server.port}", text))


def _skip_reason(example: Example) -> str:
    """The reason of the example's `<!-- example: skip (reason) -->`; a marker of another form fails."""
    skip = _SKIP.match(example.marker or "")
    reason = skip["reason"].strip() if skip else ""
    if not reason:
        pytest.fail(f"{example.where}: expected `<!-- example: skip (reason) -->`, got {example.marker!r}")
    return reason


def _starts_a_demo_agent(example: Example) -> bool:
    return example.lang in SHELLS and re.search(r"agentplane agent\b[^\n&]*--demo", example.text) is not None


# ---------------------------------------------------------------- the server and its one demo agent


class DemoAgent:
    """The module's demo agent: started for the examples that need it, stopped for those with their own."""

    def __init__(self, server: ServerProcess, log_dir: Path) -> None:
        self.server = server
        self.process = AgentProcess(server.ws_url, server.create_key("agent"), MODULE_AGENT, log_dir=log_dir)

    def _status(self) -> str | None:
        with self.server.client() as client:
            agents = client.get("/api/v1/agents").json()["items"]
        return next((str(a["status"]) for a in agents if a["id"] == MODULE_AGENT), None)

    def serve(self) -> None:
        running = self.process.process is not None and self.process.process.poll() is None
        if not running:
            self.process.start()
        eventually(lambda: self._status() == "active", timeout=30)

    def leave(self) -> None:
        if self.process.process is not None and self.process.process.poll() is None:
            self.process.stop()
            eventually(lambda: self._status() in (None, "offline"), timeout=30)


@pytest.fixture(scope="module")
def demo_agent(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoAgent]:
    agent = DemoAgent(server, tmp_path_factory.mktemp("agent"))
    yield agent
    agent.process.stop()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory where `agentplane` and `.venv/bin/agentplane` are this checkout's CLI."""
    directory = tmp_path_factory.mktemp("examples")
    bin_dir = directory / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "agentplane"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m agentplane "$@"\n')
    wrapper.chmod(0o755)
    return directory


# ---------------------------------------------------------------- running one example


def _json_values(output: str) -> list[Any]:
    """The top-level JSON objects and arrays printed in `output`, in order (other text skipped)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    index = 0
    while (starts := [i for i in (output.find("{", index), output.find("[", index)) if i >= 0]) != []:
        start = min(starts)
        try:
            value, index = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        values.append(value)
    return values


def _finished(client: httpx.Client, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + BLOCK_TIMEOUT
    while True:
        response = client.get(path, params={"wait": 10}, timeout=40)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] not in ("pending", "assigned", "running") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def _check_outcomes(server: ServerProcess, values: list[Any], where: str) -> None:
    """No problem document among the values; every task or session among them ends `succeeded`."""
    with server.client() as client:
        for value in values:
            if not isinstance(value, dict):
                continue
            if isinstance(value.get("status"), int) and value["status"] >= 400 and "title" in value:
                pytest.fail(f"{where}: the server answered {value['status']}: {json.dumps(value)}")
            if not isinstance(value.get("id"), str) or not isinstance(value.get("status"), str):
                continue
            if "participants" in value and "strategy" in value:
                session = _finished(client, f"/api/v1/sessions/{value['id']}")
                assert session["status"] == "succeeded", f"{where}: session {session['error']}"
            elif "capabilities" in value and "type" in value:
                task = _finished(client, f"/api/v1/tasks/{value['id']}")
                assert task["status"] == "succeeded", f"{where}: task {task['status']} {task['error']}"


def _stop_group(pgid: int) -> None:
    """Stop what the block left running (its background jobs): SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _run_shell(example: Example, server: ServerProcess, scratch: Path) -> None:
    for tool in ("bash", "curl"):
        if (tool == "bash" or re.search(rf"\b{tool}\b", example.text)) and shutil.which(tool) is None:
            pytest.skip(f"{example.where}: {tool} is not installed here")
    commands = _console_commands(example.text) if example.lang == "console" else example.text
    script = _substitute(commands, server)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "AGENTPLANE_"))}
    env["PATH"] = f"{scratch / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for name, value in (("AGENTPLANE_URL", server.base_url), ("AGENTPLANE_KEY", server.admin_key)):
        if not re.search(rf"\b{name}=", script):
            env[name] = value
    out, err = scratch / "stdout", scratch / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        block = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=scratch,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: the background jobs are stopped with it
        )
        try:
            returncode: int | None = block.wait(BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            _stop_group(block.pid)
            block.wait()
    printed, errors = out.read_text(), err.read_text()[-3000:]
    assert returncode is not None, f"{example.where}: still running after {BLOCK_TIMEOUT}s\n{errors}"
    assert returncode == 0, f"{example.where}: exit {returncode}\n{script}\n--- stdout\n{printed}\n{errors}"
    _check_outcomes(server, _json_values(printed), example.where)


def _run_request(example: Example, server: ServerProcess) -> None:
    assert example.request is not None, f"{example.where}: a json example names no request above it"
    method, path = example.request
    try:
        body = json.loads(_substitute(example.text, server))
    except json.JSONDecodeError as exc:
        pytest.fail(f"{example.where}: the body of {method} {path} is not JSON: {exc}")
    with server.client() as client:
        response = client.request(method, path, json=body)
    assert response.is_success, f"{example.where}: {method} {path} -> {response.status_code} {response.text}"
    _check_outcomes(server, [response.json()], example.where)


# ---------------------------------------------------------------- the tests


def test_the_docs_have_examples_the_runner_finds() -> None:
    """The runner sees what it should: README's "Try it" runs, and the session requests are found."""
    readme = [e for e in EXAMPLES if e.doc == "README.md" and e.marker is None]
    assert any(_starts_a_demo_agent(e) and "task submit" in e.text for e in readme), readme
    requests = [e for e in EXAMPLES if e.request == ("POST", "/api/v1/sessions") and e.marker is None]
    strategies = {json.loads(e.text)["strategy"] for e in requests}
    assert strategies == {"map_reduce", "consensus", "chain"}, strategies


def test_every_marker_stands_before_an_example_and_says_why() -> None:
    for doc in DOCS:
        examples, stray = _examples(doc)
        assert not stray, f"{doc.name}: `<!-- example: … -->` on line(s) {stray} stands before no example"
        for example in examples:
            if example.marker is not None:
                _skip_reason(example)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_the_example_runs_as_written(
    example: Example, server: ServerProcess, demo_agent: DemoAgent, scratch: Path
) -> None:
    if example.marker is not None:
        pytest.skip(f"{example.where}: {_skip_reason(example)}")
    if _starts_a_demo_agent(example):
        demo_agent.leave()
    else:
        demo_agent.serve()
    if example.lang == "json":
        _run_request(example, server)
    else:
        _run_shell(example, server, scratch)
