from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_settings, parse_duration


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("12", 12.0), (7, 7.0), ("1.5s", 1.5)],
)
def test_durations_in_the_seed_format(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["banana", "5 minutes", "-3s", "0", "", True])
def test_bad_durations_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(raw)


def test_defaults_match_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTPLANE_CONFIG", raising=False)
    settings = load_settings()
    assert settings.health_check_interval == 30.0
    assert settings.max_concurrent_tasks == 10
    assert settings.task_timeout == 300.0
    assert settings.routing_strategy == "capability_based"
    assert settings.routing_weights == {"capability": 0.4, "performance": 0.3, "load": 0.2, "cost": 0.1}
    assert settings.collaboration_timeout == 600.0
    assert settings.consensus_threshold == 0.8
    assert settings.consensus_max_rounds == 5


def test_env_beats_file_beats_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "agentplane.yaml"
    config.write_text(
        "agents:\n"
        "  manager:\n    task_timeout: 2m\n    max_concurrent_tasks: 4\n"
        "  routing:\n    strategy: round_robin\n    weights: {capability: 0.7}\n"
        "  models:\n    allowed: [gpt-4, claude-3-opus]\n    cost_limits: {per_task: 0.1, per_session: 1.0}\n"
    )
    monkeypatch.setenv("AGENTPLANE_CONFIG", str(config))
    monkeypatch.setenv("AGENT_TASK_TIMEOUT", "45s")
    settings = load_settings()
    assert settings.task_timeout == 45.0  # env wins
    assert settings.max_concurrent_tasks == 4  # file beats default
    assert settings.routing_strategy == "round_robin"
    assert settings.routing_weight_capability == 0.7
    assert settings.routing_weight_load == 0.2  # default
    assert settings.allowed_models == ["gpt-4", "claude-3-opus"]
    assert settings.cost_limit_per_task == 0.1


def test_allowed_models_from_env_is_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MODELS_ALLOWED", "gpt-4, claude-3-opus")
    assert load_settings().allowed_models == ["gpt-4", "claude-3-opus"]


def test_a_bad_value_names_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_TASK_TIMEOUT", "banana")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "AGENT_TASK_TIMEOUT" in message
    assert "banana" in message
    assert "\\n" not in message


def test_a_bad_strategy_names_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_ROUTING_STRATEGY", "random")
    with pytest.raises(ConfigError, match="AGENT_ROUTING_STRATEGY"):
        load_settings()


def test_an_unreadable_config_file_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTPLANE_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="AGENTPLANE_CONFIG"):
        load_settings()
