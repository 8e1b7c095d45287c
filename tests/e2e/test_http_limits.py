"""Connections that stall are closed: silent ones, slow headers (slowloris), slow bodies, idle keep-alives.

Before: uvicorn closed only idle keep-alive connections; 300 connections that sent nothing or a header line
now and then were held for as long as they liked, a file descriptor each."""

from __future__ import annotations

import time

from tests.support.rawhttp import RawConnection
from tests.support.server import ServerProcess

SERVER_ENV = {
    "AGENTPLANE_HTTP_HEADER_TIMEOUT": "1s",
    "AGENTPLANE_HTTP_BODY_TIMEOUT": "1s",
    "AGENTPLANE_HTTP_KEEPALIVE_TIMEOUT": "1s",
}
# Generous bounds: the limits are 1 s; a loaded CI machine may be slow to close, never much too early.
SOON, LATE = 0.5, 8.0


def test_a_connection_that_sends_nothing_is_closed(server: ServerProcess) -> None:
    with RawConnection(server.port) as conn:
        closed = conn.closed_within(LATE)
    assert closed is not None
    assert closed >= SOON


def test_headers_sent_a_line_at_a_time_are_cut_off(server: ServerProcess) -> None:
    with RawConnection(server.port) as conn:
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        start = time.monotonic()
        try:
            for _ in range(int(LATE * 2)):
                time.sleep(0.5)
                conn.send(b"X-Slow: yes\r\n")
        except OSError:
            pass  # the server closed the connection: what this test wants
        closed = conn.closed_within(LATE)
    assert closed is not None
    assert time.monotonic() - start < LATE


def test_a_body_that_comes_too_slowly_gets_408_and_a_close(server: ServerProcess) -> None:
    with RawConnection(server.port) as conn:
        head = (
            "POST /api/v1/tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {server.admin_key}\r\nContent-Length: 200\r\n\r\n"
        )
        conn.send(head.encode() + b'{"type": "slow",')
        response = conn.read_response()
        assert response.status == 408
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == "/problems/request_timeout"
        assert conn.closed_within(LATE) is not None


def test_an_idle_keep_alive_connection_is_closed_after_a_good_request(server: ServerProcess) -> None:
    with RawConnection(server.port) as conn:
        assert conn.request("GET", "/healthz").status == 200
        assert conn.request("GET", "/healthz").status == 200  # kept alive between requests
        closed = conn.closed_within(LATE)
    assert closed is not None


def test_oversized_headers_are_refused(server: ServerProcess) -> None:
    with RawConnection(server.port) as conn:
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        try:
            for _ in range(100):
                conn.send(b"X-Big: " + b"x" * 1000 + b"\r\n")
        except OSError:
            pass
        response = conn.read_response()
    assert response.status == 431


def test_a_quick_request_is_unaffected(server: ServerProcess) -> None:
    with RawConnection(server.port) as conn:
        for _ in range(3):
            assert conn.request("GET", "/healthz").status == 200
