"""Declarative agents: `agentplane agent --spec agents.yaml` (docs/agents.md; examples/agents.yaml).

    url: http://127.0.0.1:8080            # optional: --url, else $AGENTPLANE_URL; a list for failover
    agents:
      - id: coder-1
        provider: openai                  # or anthropic
        model: gpt-4
        base_url: http://127.0.0.1:11434/v1   # any OpenAI-compatible server; omit for OpenAI itself
        api_key_env: OPENAI_API_KEY       # the variable holding the provider key (never the key itself)
        max_concurrency: 4
        tasks:
          code-generation:
            system: You write small, correct functions.
            prompt: "Write {language} code that {spec}."
            schema: {type: object, properties: {code: {type: string}}}   # optional: JSON output

A mistake is reported with its place in the file: ``agents.yaml: agents[0].tasks.code-review.prompt: ...``.
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentplane.providers import model_agent, provider
from agentplane.providers.base import Prompt
from agentplane.sdk import Agent

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"


class SpecError(ValueError):
    """A spec that cannot be run; the message names the file and the path inside it."""


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    system: str = ""
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    max_tokens: int = Field(default=1024, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write {{{{ for a literal brace") from exc
        if any(name == "" or name.isdigit() for name in fields):
            raise ValueError("name the payload's fields in braces ({spec}), not by position ({} or {0})")
        return value


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=_NAME)] | None = None
    name: str = ""
    provider: Literal["openai", "anthropic"]
    model: str = Field(min_length=1, max_length=128)
    base_url: str | None = None
    api_key_env: str | None = None
    capabilities: list[Annotated[str, Field(pattern=_NAME)]] | None = None
    max_concurrency: int = Field(default=4, ge=1, le=10_000)
    stream: bool = True
    timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    tasks: dict[Annotated[str, Field(pattern=_NAME)], TaskSpec] = Field(min_length=1)


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | list[str] | None = None
    agents: list[AgentSpec] = Field(min_length=1)


def load_spec(path: Path) -> Spec:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SpecError(f"{path}: {_yaml_path(error['loc'])}: {message}{more}") from exc


def _yaml_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def build_agents(spec: Spec, path: Path, urls: str | Sequence[str] | None, key: str) -> list[Agent]:
    """One model-backed agent per entry; the provider's key is read from the variable the entry names."""
    agents = []
    for index, entry in enumerate(spec.agents):
        api_key = None
        if entry.api_key_env is not None:
            api_key = os.environ.get(entry.api_key_env)
            if not api_key:
                where = f"agents[{index}].api_key_env"
                raise SpecError(f"{path}: {where}: the variable {entry.api_key_env} is not set")
        try:
            model = provider(entry.provider, entry.model, api_key=api_key, base_url=entry.base_url,
                             timeout=entry.timeout, max_retries=entry.max_retries)  # fmt: skip
        except ImportError as exc:
            raise SpecError(
                f"{path}: agents[{index}].provider: the {entry.provider} SDK is not installed: "
                f"pip install 'agentplane[{entry.provider}]'"
            ) from exc
        prompts = {
            task_type: Prompt(task.prompt, task.system, task.schema_, task.max_tokens, task.temperature)
            for task_type, task in entry.tasks.items()
        }
        agents.append(
            model_agent(
                urls or spec.url,
                key,
                model,
                prompts,
                capabilities=entry.capabilities,
                stream=entry.stream,
                agent_id=entry.id,
                name=entry.name,
                max_concurrency=entry.max_concurrency,
            )  # fmt: skip
        )
    return agents
