"""Where settings come from and how a mistake in each source is reported: the YAML file refuses keys outside
the seed's tree, `.env` is read, and every error names the key as the operator wrote it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
# Keys .env.example lists for docker compose itself, not for the server.
COMPOSE_KEYS = {"GRAFANA_ADMIN_PASSWORD"}


@pytest.fixture(autouse=True)
def _elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test runs in an empty directory (no stray .env) with no config file named."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTPLANE_CONFIG", raising=False)


def _config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    path = tmp_path / "agentplane.yaml"
    path.write_text(text)
    monkeypatch.setenv("AGENTPLANE_CONFIG", str(path))


def _error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    return str(info.value)


def test_a_misspelt_yaml_key_is_refused_with_its_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _config(monkeypatch, tmp_path, "agents:\n  manager:\n    task_timout: 2m\n")
    message = _error()
    assert "unknown key agents.manager.task_timout" in message
    assert "did you mean agents.manager.task_timeout?" in message


def test_a_misspelt_top_level_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _config(monkeypatch, tmp_path, "agent:\n  manager:\n    task_timeout: 2m\n")
    assert "unknown key agent (did you mean agents?)" in _error()


def test_every_unknown_key_is_named_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _config(
        monkeypatch,
        tmp_path,
        "agents:\n  routing:\n    weights: {capabilty: 0.5}\n  collaboration:\n    strategies:\n"
        "      consensus: {treshold: 0.9}\n",
    )
    message = _error()
    assert "agents.routing.weights.capabilty" in message
    assert "agents.collaboration.strategies.consensus.treshold" in message


def test_model_names_under_prices_are_the_operators_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _config(
        monkeypatch,
        tmp_path,
        "agents:\n  models:\n    prices:\n      my-model-7b: {input_per_1k: 0.001, output_per_1k: 0.002}\n",
    )
    assert load_settings().model_prices["my-model-7b"]["output_per_1k"] == 0.002


def test_a_bad_yaml_value_names_its_yaml_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _config(
        monkeypatch,
        tmp_path,
        "agents:\n  manager:\n    task_timeout: soon\n  models:\n    prices:\n      m: {input_per_1k: 1}\n",
    )
    message = _error()
    assert "agents.manager.task_timeout: invalid duration 'soon'" in message
    assert "agents.models.prices: price of 'm' lacks output_per_1k" in message
    assert "task_timeout:" not in message.replace("agents.manager.task_timeout:", "")


def test_the_same_bad_value_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _config(monkeypatch, tmp_path, "agents:\n  manager:\n    task_timeout: 2m\n")
    monkeypatch.setenv("AGENT_TASK_TIMEOUT", "soon")
    message = _error()
    assert "AGENT_TASK_TIMEOUT: invalid duration 'soon'" in message
    assert "agents.manager" not in message


def test_a_bad_flag_names_the_flag() -> None:
    assert "--port: " in _error(port=70000)


def test_dotenv_is_read_below_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "AGENT_TASK_TIMEOUT=45s\nAGENT_MAX_ATTEMPTS=7\nGRAFANA_ADMIN_PASSWORD=not-for-the-server\n"
    )
    monkeypatch.setenv("AGENT_MAX_ATTEMPTS", "2")
    settings = load_settings()
    assert settings.task_timeout == 45.0
    assert settings.max_attempts == 2  # the environment wins


def test_dotenv_beats_the_yaml_file_it_names(tmp_path: Path) -> None:
    (tmp_path / "agentplane.yaml").write_text(
        "agents:\n  manager:\n    task_timeout: 2m\n    max_attempts: 9\n"
    )
    (tmp_path / ".env").write_text("AGENTPLANE_CONFIG=agentplane.yaml\nAGENT_TASK_TIMEOUT=45s\n")
    settings = load_settings()
    assert settings.task_timeout == 45.0
    assert settings.max_attempts == 9


def test_a_bad_dotenv_value_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AGENT_ROUTING_STRATEGY=random\n")
    assert "AGENT_ROUTING_STRATEGY: " in _error()


def test_env_example_lists_only_known_keys_and_loads_as_the_defaults(tmp_path: Path) -> None:
    example = (ROOT / ".env.example").read_text()
    keys = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    known = {
        name
        for field in Settings.model_fields.values()
        if field.validation_alias is not None
        for name in getattr(field.validation_alias, "choices", [])
        if isinstance(name, str) and name.isupper()
    } | {"AGENTPLANE_CONFIG"}
    assert keys - COMPOSE_KEYS <= known, sorted(keys - COMPOSE_KEYS - known)
    assert len(keys) > 30
    (tmp_path / ".env").write_text(example)
    assert load_settings().model_dump(exclude={"replica_id"}) == Settings(
        _env_file=None  # type: ignore[call-arg]
    ).model_dump(exclude={"replica_id"})


def test_only_the_documented_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's own HOST and PORT (the fields' lower-case YAML keys, upper-cased) are not ours."""
    monkeypatch.setenv("HOST", "box-17")
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.setenv("MODEL_PRICES", '{"x": {"input_per_1k": 1, "output_per_1k": 1}}')
    settings = load_settings(database_url="postgresql://x@y/z")
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert "x" not in settings.model_prices
    monkeypatch.setenv("AGENTPLANE_PORT", "8111")
    assert load_settings(database_url="postgresql://x@y/z").port == 8111
