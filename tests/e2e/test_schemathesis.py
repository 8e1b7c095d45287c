"""Schemathesis against the server's own OpenAPI document: every check, NUL bytes and huge integers allowed,
positive and negative examples, a bounded number per operation. 0 server errors and 0 schema violations.

The server is a real process with the admin key, so every operation is reached past authentication. A few
settings keep the run bounded and honest (each says why in the config below)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.server import ServerProcess

CONFIG = """
# An event stream runs until its task ends: one event shows its shape.
max-stream-events = 1
request-timeout = 10

[parameters]
# A long poll waits up to 60 s for a task to end; its bounds are still checked by the coverage phase.
"query.wait" = 0

[generation]
mode = "all"
allow-x00 = true
max-examples = 25
deterministic = true

# A cursor is opaque (a next_cursor the server returned): any other string is refused with 422, which no
# schema can say. A session's params are checked by its strategy (a chain needs steps...), beyond the schema.
[[operations]]
include-path-regex = "^/api/v1/(tasks|sessions|agents)$"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path = "/api/v1/sessions"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


def test_the_api_conforms_to_its_own_schema(server: ServerProcess, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{server.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {server.admin_key}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=tmp_path, check=False)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "passed" in result.stdout, report
    assert "Exception in ASGI application" not in server.log()
    assert "unhandled error" not in server.log()
