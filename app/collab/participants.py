"""Who takes part in a session. Pure: the service loads the agents, these functions decide.

A session's participants are fixed when it is created, so what the client saw accepted is what runs: every
subtask is restricted to them (consensus pins each answer to one of them). Routing still picks among them
per subtask, and leases and retries work as for any task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.collab.schemas import Participants
from app.routing.strategies import Candidate, RoutingPolicy, TaskRequirements, eligible, pick


@dataclass(frozen=True, slots=True)
class AgentView:
    """One registered agent as participant resolution needs it."""

    id: str
    model: str
    status: str
    capabilities: frozenset[str]
    max_concurrency: int
    active: int = 0
    success_rate: float = 1.0


class ParticipantError(ValueError):
    """The participants cannot be had; `field` names the part of the request at fault."""

    def __init__(self, message: str, field: str = "participants") -> None:
        super().__init__(message)
        self.field = field


def required_capabilities(
    strategy: str, request: Participants | None, task_capabilities: Sequence[str]
) -> list[str]:
    """What every participant must offer: the listed ones, plus the task's own unless steps name theirs."""
    listed = list(request.capabilities or []) if request is not None else []
    if strategy == "chain":
        return listed  # each step names its own capability; check_steps() sees to those
    return list(dict.fromkeys([*listed, *task_capabilities]))


def resolve(
    *,
    strategy: str,
    request: Participants | None,
    task_capabilities: Sequence[str],
    agents: Sequence[AgentView],
    policy: RoutingPolicy,
    estimated_tokens: int,
) -> tuple[str, ...]:
    """The participants' ids in a stable order; () when the request names none (any capable agent)."""
    if request is None:
        return ()
    required = required_capabilities(strategy, request, task_capabilities)
    if request.agent_ids is not None:
        return _named(request.agent_ids, agents, required)
    requirements = TaskRequirements(frozenset(required), estimated_tokens=estimated_tokens)
    # A participant is chosen for the life of the session, not for one task: an agent whose slots happen to
    # be full right now must still qualify, so it is offered to routing with one slot free.
    candidates = [
        Candidate(
            agent_id=agent.id,
            model=agent.model,
            capabilities=agent.capabilities,
            max_concurrency=agent.max_concurrency,
            active=min(agent.active, max(0, agent.max_concurrency - 1)),
            success_rate=agent.success_rate,
            status=agent.status,
        )
        for agent in sorted(agents, key=lambda agent: agent.id)
    ]
    pool = eligible(requirements, candidates, policy)
    wanted = request.count or 1
    if len(pool) < wanted:
        raise ParticipantError(_shortfall(strategy, wanted, required, len(pool)))
    if request.count is None:
        return tuple(candidate.agent_id for candidate in pool)
    chosen: list[str] = []
    last: str | None = None
    while len(chosen) < request.count:
        decision = pick(requirements, pool, policy, last_agent_id=last)
        if decision is None:  # cannot happen while the pool is non-empty; kept for the type checker
            raise ParticipantError(_shortfall(strategy, wanted, required, len(chosen)))
        chosen.append(decision.agent_id)
        last = decision.agent_id
        pool = [candidate for candidate in pool if candidate.agent_id != decision.agent_id]
    return tuple(chosen)


def _named(agent_ids: Sequence[str], agents: Sequence[AgentView], required: Sequence[str]) -> tuple[str, ...]:
    known = {agent.id: agent for agent in agents}
    unknown = [agent_id for agent_id in agent_ids if agent_id not in known]
    if unknown:
        raise ParticipantError(f"unknown agents: {', '.join(unknown)}", "participants.agent_ids")
    offline = [agent_id for agent_id in agent_ids if known[agent_id].status == "offline"]
    if offline:
        raise ParticipantError(f"agents not connected: {', '.join(offline)}", "participants.agent_ids")
    lacking = [
        f"{agent_id} lacks [{', '.join(sorted(set(required) - known[agent_id].capabilities))}]"
        for agent_id in agent_ids
        if not set(required) <= known[agent_id].capabilities
    ]
    if lacking:
        raise ParticipantError(
            f"every participant needs [{', '.join(required)}]: {'; '.join(lacking)}", "participants.agent_ids"
        )
    return tuple(agent_ids)


def _shortfall(strategy: str, wanted: int, required: Sequence[str], have: int) -> str:
    noun = "participant" if wanted == 1 else "participants"
    verb = "is" if have == 1 else "are"
    return f"{strategy} needs {wanted} {noun} with [{', '.join(required)}]; {have} {verb} connected"


def check_steps(params: dict[str, Any], participants: tuple[str, ...], agents: Sequence[AgentView]) -> None:
    """Every chain step's capability must be offered by some participant, or the step could never run.

    Call it after the strategy validated the params, so the steps are well formed.
    """
    if not participants:
        return
    offered = {agent.id: agent.capabilities for agent in agents}
    for number, step in enumerate(params.get("steps", [])):
        capability = step["capability"]
        if not any(capability in offered.get(agent_id, frozenset()) for agent_id in participants):
            raise ParticipantError(
                f"chain step {step['name']!r} needs capability {capability!r}, "
                f"which none of the participants ({', '.join(participants)}) offers",
                f"params.steps[{number}].capability",
            )
