"""Server URLs: lists, AGENTPLANE_URL with commas, http(s) bases and ws(s) endpoints."""

from __future__ import annotations

import pytest

from agentplane.urls import ServerUrlError, agent_url, agent_urls, api_url, api_urls, split_urls


def test_http_base_becomes_the_agent_endpoint() -> None:
    assert agent_url("http://h:8080") == "ws://h:8080/ws/agents"
    assert agent_url("https://h/") == "wss://h/ws/agents"
    assert agent_url("https://h/prefix/") == "wss://h/prefix/ws/agents"


def test_ws_url_is_used_as_given() -> None:
    assert agent_url("ws://h:1/custom/path") == "ws://h:1/custom/path"
    assert agent_url("wss://h/ws/agents") == "wss://h/ws/agents"


def test_api_url_of_either_form() -> None:
    assert api_url("ws://h:8080/ws/agents") == "http://h:8080"
    assert api_url("wss://h/prefix/ws/agents") == "https://h/prefix"
    assert api_url("http://h:8080/") == "http://h:8080"


def test_comma_list_keeps_order_and_drops_blanks() -> None:
    assert agent_urls("http://a:1, ws://b:2/ws/agents ,,") == ["ws://a:1/ws/agents", "ws://b:2/ws/agents"]
    assert api_urls(["http://a:1,http://b:2", "ws://c:3/ws/agents"]) == [
        "http://a:1",
        "http://b:2",
        "http://c:3",
    ]


def test_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPLANE_URL", "http://x:1,http://y:2")
    assert split_urls(None) == ["http://x:1", "http://y:2"]
    assert split_urls("http://given:3") == ["http://given:3"]  # an explicit URL beats the variable
    assert split_urls(None, env=False) == ["http://127.0.0.1:8080"]
    monkeypatch.delenv("AGENTPLANE_URL")
    assert split_urls([]) == ["http://127.0.0.1:8080"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8080", "expected http://"),
        ("ftp://h", "expected http://"),
        ("http://", "no host"),
        ("http://h:99999", "out of range"),
    ],
)
def test_bad_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(ServerUrlError, match=message) as info:
        split_urls(url)
    assert repr(url) in str(info.value)


def test_only_commas_is_an_error() -> None:
    with pytest.raises(ServerUrlError, match="no server URL"):
        split_urls(" , ")
