"""REST rate limits per API key: a token bucket, 429 problem+json with Retry-After, RateLimit-* headers."""

from __future__ import annotations

import httpx

from tests.support.server import ServerProcess

SERVER_ENV = {"AGENTPLANE_RATE_LIMIT": "1", "AGENTPLANE_RATE_LIMIT_BURST": "5"}


def test_a_key_over_its_limit_gets_429_and_others_are_unaffected(server: ServerProcess) -> None:
    greedy, patient = server.create_key("client", "greedy"), server.create_key("client", "patient")
    with server.client(greedy) as client:
        answers = [client.get("/api/v1/tasks") for _ in range(12)]
    statuses = [answer.status_code for answer in answers]
    assert 200 in statuses, statuses
    assert 429 in statuses, statuses

    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"] == "/problems/rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "5"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) >= 1

    served = [answer for answer in answers if answer.status_code == 200][-1]
    assert served.headers["ratelimit-limit"] == "5"
    assert 0 <= int(served.headers["ratelimit-remaining"]) < 5

    with server.client(patient) as client:
        assert client.get("/api/v1/tasks").status_code == 200


def test_requests_without_a_known_key_are_not_counted(server: ServerProcess) -> None:
    for _ in range(10):
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200
    with server.client("ap_not_a_key") as client:
        assert {client.get("/api/v1/tasks").status_code for _ in range(10)} == {401}
