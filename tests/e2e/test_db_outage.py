"""A database outage is the server's condition, not the client's fault: REST answers 503 problem+json with
Retry-After, /readyz says not ready, the log says so once (not a traceback per request), and the server
recovers by itself when the database is back.

Before: writes answered 500 `internal_error` with a full traceback per request in the log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.tcpproxy import TcpProxy
from tests.support.wsclient import RawAgent

TASK = {"type": "outage", "capabilities": ["outage"]}


@pytest.fixture(scope="module")
def proxied(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, TcpProxy]]:
    proxy = TcpProxy.in_front_of(database_url).start()
    server = ServerProcess(proxy.url_for(database_url), log_dir=tmp_path_factory.mktemp("outage-logs"))
    server.start()
    yield server, proxy
    server.stop()
    proxy.stop()


def _wait_for(client: httpx.Client, status: int, seconds: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        response = client.post("/api/v1/tasks", json=TASK)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_an_outage_is_503_with_retry_after_logged_once(proxied: tuple[ServerProcess, TcpProxy]) -> None:
    server, proxy = proxied
    key = server.create_key("client", "outage")
    with server.client(key) as client:
        assert client.post("/api/v1/tasks", json=TASK).status_code == 201

        proxy.down()
        answers = [client.post("/api/v1/tasks", json=TASK) for _ in range(5)]
        answers += [client.get("/api/v1/tasks") for _ in range(3)]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["type"] == "/problems/unavailable"
            assert int(answer.headers["retry-after"]) >= 1
        ready = httpx.get(f"{server.base_url}/readyz")
        assert ready.status_code == 503
        assert "retry-after" in ready.headers

        proxy.up()  # the database is back: the server recovers without a restart
        assert _wait_for(client, 201).status_code == 201
        assert httpx.get(f"{server.base_url}/readyz").status_code == 200

    log = Path(server.log_path).read_text()
    assert log.count("database unavailable") == 1, log[-4000:]
    assert "database available again" in log
    assert "Exception in ASGI application" not in log
    assert "unhandled error" not in log


async def test_a_repeated_bad_token_is_refused_without_the_database(
    proxied: tuple[ServerProcess, TcpProxy],
) -> None:
    """An unknown token is remembered for the key cache's 5 s: repeating it costs no query, so with the
    database cut it is still 401 (REST) and 4001 (agent socket), not 503 / 1013."""
    server, proxy = proxied
    bad = {"Authorization": "Bearer ap_not-a-key-at-all"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=bad, timeout=10) as client:
        assert (await client.get("/api/v1/tasks")).status_code == 401  # looked up once
        bad_agent = await RawAgent.connect(server.ws_url, "ap_not-an-agent-key", register=False)
        assert await bad_agent.closed_with() == 4001
        proxy.down()
        try:
            for _ in range(20):
                response = await client.get("/api/v1/tasks")
                assert response.status_code == 401, response.text
            again = await RawAgent.connect(server.ws_url, "ap_not-an-agent-key", register=False)
            assert await again.closed_with() == 4001
        finally:
            proxy.up()
