"""consensus: every participant answers; the session ends when enough of them agree.

Params: key (dotted path into each output; default the whole output), max_rounds (int >= 1, default
spec.consensus_max_rounds), threshold (0 < t <= 1, default spec.consensus_threshold).

Answers agree when the values at `key` are equal as canonical JSON (sorted keys, 1 == 1.0). An answer without
the key agrees with nobody. Consensus needs at least one answer and votes / answers >= threshold; failed
subtasks are not answers, so they neither vote nor dilute the share. Rounds after the first carry every
answer of the previous round as payload["proposals"], so agents can converge.

State: {"round": r, "answers": {agent_id: answer} of the round in progress, "rounds": [{"round", "answers"}]
of every finished round, "final": ...}; an answer is {"agent_id", "output", "status", "error"}.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.collab.strategies.base import (
    FAILED,
    SUCCEEDED,
    Decision,
    FinishedSubtask,
    SessionSpec,
    SpecError,
    SubtaskSpec,
    check_known,
    failure,
    finish,
    int_param,
    lookup,
    normalise,
    plain_error,
    replay_final,
    str_param,
    thaw,
    to_json,
)

PARAMS = frozenset({"key", "max_rounds", "threshold"})


@dataclass(frozen=True, slots=True)
class _Params:
    key: str  # "" = the whole output
    max_rounds: int
    threshold: float


def validate(spec: SessionSpec) -> None:
    _parse(spec)


def step(spec: SessionSpec, state: Mapping[str, Any], finished: Sequence[FinishedSubtask]) -> Decision:
    new = thaw(state)
    if "final" in new:
        return replay_final(new)
    params = _parse(spec)
    if not new:
        new = {"round": 1, "answers": {}, "rounds": []}
        return Decision(state=new, submit=_round_subtasks(spec, 1, []), round=1)

    current: int = new["round"]
    expected = {subtask_key(current, agent_id): agent_id for agent_id in spec.participants}
    answers: dict[str, Any] = new["answers"]
    for subtask in finished:
        agent_id = expected.get(subtask.key)
        # Earlier rounds' keys and repeats of this round's are already recorded: ignore them.
        if agent_id is None or agent_id in answers:
            continue
        answers[agent_id] = {
            "agent_id": agent_id,
            "output": to_json(subtask.output) if subtask.status == SUCCEEDED else None,
            "status": subtask.status,
            "error": plain_error(subtask.error),
        }
    if len(answers) < len(spec.participants):
        return Decision(state=new, round=current)

    in_order = [answers[agent_id] for agent_id in spec.participants]
    new["rounds"].append({"round": current, "answers": in_order})
    new["answers"] = {}
    winners, of = _largest_group(in_order, params.key)
    if of and len(winners) / of >= params.threshold:
        result = {
            "answer": winners[0]["output"],
            "share": len(winners) / of,
            "votes": len(winners),
            "of": of,
            "round": current,
            "agents": [answer["agent_id"] for answer in winners],
        }
        return finish(new, status=SUCCEEDED, result=result, round=current)
    if current >= params.max_rounds:
        best = f"{len(winners)} of {of} agreed" if of else "no participant answered"
        message = f"no consensus after {current} round(s): {best}, threshold {params.threshold}"
        error = failure("no_consensus", message, rounds=copy.deepcopy(new["rounds"]))
        return finish(new, status=FAILED, error=error, round=current)
    new["round"] = current + 1
    return Decision(state=new, submit=_round_subtasks(spec, current + 1, in_order), round=current + 1)


def subtask_key(round_number: int, agent_id: str) -> str:
    return f"r{round_number}-{agent_id}"


def _round_subtasks(
    spec: SessionSpec, round_number: int, previous: list[dict[str, Any]]
) -> tuple[SubtaskSpec, ...]:
    payload: dict[str, Any] = to_json(spec.payload)
    if round_number > 1:
        payload["round"] = round_number
        payload["proposals"] = [
            {"agent_id": answer["agent_id"], "output": answer["output"]}
            for answer in previous
            if answer["status"] == SUCCEEDED
        ]
    return tuple(
        SubtaskSpec(
            key=subtask_key(round_number, agent_id),
            type=spec.task_type,
            capabilities=spec.capabilities,
            payload=copy.deepcopy(payload),
            agent_ids=(agent_id,),
        )
        for agent_id in spec.participants
    )


def _largest_group(answers: list[dict[str, Any]], key: str) -> tuple[list[dict[str, Any]], int]:
    """The largest group of agreeing answers (first in participant order on a tie), and the answer count."""
    groups: dict[tuple[bool, str], list[dict[str, Any]]] = {}
    succeeded = [answer for answer in answers if answer["status"] == SUCCEEDED]
    for answer in succeeded:
        found, value = lookup(answer["output"], key)
        # An answer without the key gets a group of its own, named by the agent so it cannot collide.
        group = (True, normalise(value)) if found else (False, answer["agent_id"])
        groups.setdefault(group, []).append(answer)
    if not groups:
        return [], 0
    # Groups are inserted in participant order of their first member and max() keeps the first of equals.
    return max(groups.values(), key=len), len(succeeded)


def _parse(spec: SessionSpec) -> _Params:
    raw = spec.params
    check_known(raw, PARAMS)
    if not spec.participants:
        raise SpecError("participants: consensus needs at least one agent")
    if len(set(spec.participants)) != len(spec.participants):
        raise SpecError("participants: an agent may take part only once")
    threshold = raw.get("threshold", spec.consensus_threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise SpecError(f"params.threshold must be a number in (0, 1], got {threshold!r}")
    return _Params(
        key=str_param(raw, "key") if "key" in raw else "",
        max_rounds=int_param(raw, "max_rounds", default=spec.consensus_max_rounds),
        threshold=float(threshold),
    )
