"""OpenTelemetry is optional for agents (the `tracing` extra): without OTEL_* the SDK does not import it, and
where it is not installed an agent asked to trace says so once and runs untraced."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Makes `import opentelemetry...` fail as on a machine without the extra, then builds what an agent builds.
_WITHOUT_OTEL = """
import importlib.abc, json, logging, sys

class NoOtel(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoOtel())
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
from agentplane._sdk_jobs import Jobs
from agentplane.providers.base import ModelHandler, Prompt

jobs = Jobs(lambda: None, 1024)
handler = ModelHandler(provider=None, prompt=Prompt("{x}"))
print(json.dumps([jobs._tracer is None, handler._tracer is None]))
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**clean, **env}
    )


def test_without_otel_settings_the_sdk_does_not_import_opentelemetry() -> None:
    code = (
        "import json, sys\n"
        "from agentplane._sdk_jobs import Jobs\n"
        "Jobs(lambda: None, 1024)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))"
    )
    assert json.loads(_run(code).stdout) == []


def test_an_agent_without_the_extra_runs_untraced_and_says_why() -> None:
    done = _run(_WITHOUT_OTEL, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    assert json.loads(done.stdout) == [True, True]
    warnings = [line for line in done.stderr.splitlines() if "agentplane[tracing]" in line]
    assert len(warnings) == 1, done.stderr  # once per process, not per handler
