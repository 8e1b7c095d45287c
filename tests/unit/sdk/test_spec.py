"""Declarative agents: the shipped example loads, and every mistake names its place in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentplane import cli
from agentplane.providers.spec import SpecError, build_agents, load_spec

EXAMPLE = Path(__file__).parents[3] / "examples" / "agents.yaml"
KEY = "ap_test_key_0123456789abcdefghij"


def test_the_example_builds_the_seeds_code_generation_agent() -> None:
    [agent] = build_agents(load_spec(EXAMPLE), EXAMPLE, "http://127.0.0.1:9", KEY)
    register = agent._register_frame()
    assert register.agent_id == "code-generator-1"
    assert register.model == "qwen2.5-coder:7b"
    assert register.task_types == ["code-generation", "code-review", "refactoring"]
    assert [cap.name for cap in register.capabilities] == ["code-generation", "code-review", "refactoring"]
    assert register.max_concurrency == 4
    assert agent.urls == ["ws://127.0.0.1:9/ws/agents"]


GOOD_TASK = "tasks: {review: {prompt: 'Review {code}'}}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("agents: [{provider: openai, model: m, tasks: {review: {system: s}}}]",
         "agents[0].tasks.review.prompt: Field required"),
        (f"agents: [{{provider: mistral, model: m, {GOOD_TASK}}}]", "agents[0].provider: Input should be"),
        ("agents: [{provider: openai, model: m, tasks: {review: {prompt: 'Review {code'}}}]",
         "agents[0].tasks.review.prompt: not a valid template"),
        ("agents: [{provider: openai, model: m, tasks: {review: {prompt: 'Review {}'}}}]",
         "agents[0].tasks.review.prompt: name the payload's fields"),
        (f"agents: [{{provider: openai, model: m, colour: red, {GOOD_TASK}}}]",
         "agents[0].colour: Extra inputs"),
        (f"agents: [{{provider: openai, model: m, {GOOD_TASK}}}, {{provider: openai, {GOOD_TASK}}}]",
         "agents[1].model: Field required"),
        ("agents: []", "agents: List should have at least 1 item"),
        ("agents: [{provider: openai", "not valid YAML"),
    ],
)  # fmt: skip
def test_spec_errors_name_the_yaml_path(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(body)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_an_unset_key_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_PROVIDER_KEY", raising=False)
    path = tmp_path / "agents.yaml"
    path.write_text(
        f"agents: [{{provider: anthropic, model: m, api_key_env: NO_SUCH_PROVIDER_KEY, {GOOD_TASK}}}]"
    )
    with pytest.raises(
        SpecError, match=r"agents\[0\]\.api_key_env: the variable NO_SUCH_PROVIDER_KEY is not set"
    ):
        build_agents(load_spec(path), path, None, KEY)


def test_the_agent_command_reports_a_bad_spec_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text("agents: [{provider: openai, model: m, tasks: {}}]")
    assert cli.main(["agent", "--key", KEY, "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "agents[0].tasks: Dictionary should have at least 1 item" in err
