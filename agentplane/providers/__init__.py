"""Model-backed agents: a task type maps to a prompt, a provider SDK answers it (docs/agents.md).

    from agentplane.providers import Prompt, model_agent
    from agentplane.providers.openai_chat import OpenAIChat

    agent = model_agent(
        "http://127.0.0.1:8080", key, OpenAIChat("gpt-4o"),
        {"code-review": Prompt("Review this code:\n{code}", system="You are a careful reviewer.")},
    )

The adapters import their provider's SDK (an extra: `agentplane[openai]`, `agentplane[anthropic]`); this
module imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentplane.providers.base import ModelHandler, Prompt, Provider
from agentplane.sdk import Agent, CapabilitySpec

__all__ = ["ModelHandler", "Prompt", "Provider", "model_agent", "provider"]


def model_agent(
    url: str | Sequence[str] | None,
    key: str,
    model_provider: Provider,
    prompts: Mapping[str, Prompt],
    *,
    capabilities: Sequence[str | CapabilitySpec] | None = None,
    stream: bool = True,
    **agent_options: Any,
) -> Agent:
    """An agent registered under the provider's model name (so routing by model, the allowed models and
    the price table apply), with one handler per task type in ``prompts``."""
    agent = Agent(url, key, model_provider.model, capabilities, **agent_options)
    for task_type, prompt in prompts.items():
        agent.add_handler(task_type, ModelHandler(model_provider, prompt, stream=stream))
    return agent


def provider(
    kind: str,
    model: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 120.0,
    max_retries: int = 2,
) -> Provider:
    """``kind`` is "openai" (and OpenAI-compatible servers) or "anthropic"; the SDK is imported here."""
    if kind == "openai":
        from agentplane.providers.openai_chat import OpenAIChat

        return OpenAIChat(model, api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
    if kind == "anthropic":
        from agentplane.providers.anthropic_messages import AnthropicMessages

        return AnthropicMessages(
            model, api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
    raise ValueError(f"unknown provider {kind!r}: expected 'openai' or 'anthropic'")
