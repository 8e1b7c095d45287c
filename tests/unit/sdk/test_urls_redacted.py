"""A server URL in a log line or an error never carries a key or a password."""

from __future__ import annotations

import pytest

from agentplane.urls import ServerUrlError, agent_urls, redacted


def test_a_token_in_the_query_and_a_password_are_hidden() -> None:
    shown = redacted("ws://user:s3cret@host:8080/ws/agents?token=ap_live_key")
    assert "s3cret" not in shown
    assert "ap_live_key" not in shown
    assert shown == "ws://***@host:8080/ws/agents?***"


def test_a_plain_url_is_shown_as_it_is() -> None:
    assert redacted("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


def test_a_bad_url_is_refused_without_echoing_its_secret() -> None:
    with pytest.raises(ServerUrlError) as refused:
        agent_urls("ftp://user:s3cret@host/?token=ap_live_key")
    assert "s3cret" not in str(refused.value)
    assert "ap_live_key" not in str(refused.value)
