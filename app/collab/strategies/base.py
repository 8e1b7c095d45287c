"""The values every collaboration strategy speaks, and the small pure helpers they share.

A strategy is `validate(spec)` plus `step(spec, state, finished) -> Decision`. The session runner owns all
I/O: it persists `Decision.state` after every step, submits `Decision.submit` as ordinary tasks and feeds
finished subtasks back in. Because a crash can make the runner deliver a finished subtask twice, every
strategy records results keyed by subtask key, never submits a key twice and keeps its final outcome in
`state["final"]`, so a repeated step changes nothing. Strategies never mutate the state they are given.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

SUCCEEDED = "succeeded"
FAILED = "failed"
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, "cancelled", "timed_out"})


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """Everything a strategy may know about its session; fixed for the life of the session."""

    strategy: str  # "map_reduce" | "consensus" | "chain"
    task_type: str
    capabilities: tuple[str, ...]
    payload: Mapping[str, Any]
    params: Mapping[str, Any]
    participants: tuple[str, ...]  # resolved agent ids, in a stable order
    consensus_threshold: float = 0.8
    consensus_max_rounds: int = 5
    max_parallel: int = 20  # map_reduce default when params.max_parallel is absent


@dataclass(frozen=True, slots=True)
class SubtaskSpec:
    """One task the runner should submit on the session's behalf."""

    key: str  # unique within the session and stable across restarts
    type: str
    capabilities: tuple[str, ...]
    payload: dict[str, Any]
    agent_ids: tuple[str, ...] | None  # None = any capable agent


@dataclass(frozen=True, slots=True)
class FinishedSubtask:
    """A subtask in a final status; the task layer has already spent its retries."""

    key: str
    status: str  # succeeded | failed | cancelled | timed_out
    output: Any
    error: Mapping[str, Any] | None
    agent_id: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """What one step decided. `state` replaces the stored state wholesale."""

    state: dict[str, Any]
    submit: tuple[SubtaskSpec, ...] = ()
    done: bool = False
    status: str | None = None  # when done: "succeeded" | "failed"
    result: Any = None  # when succeeded
    error: dict[str, Any] | None = None  # when failed: {"code", "message", ...details}
    round: int = 0  # consensus: current round; chain: current step index; map_reduce: 0


class SpecError(ValueError):
    """A session spec that can never run; the message names the offending param."""


class Strategy(Protocol):
    """What the registry maps a strategy name to (the strategy modules satisfy it)."""

    def validate(self, spec: SessionSpec) -> None: ...

    def step(
        self, spec: SessionSpec, state: Mapping[str, Any], finished: Sequence[FinishedSubtask]
    ) -> Decision: ...


# --- state and outcomes ----------------------------------------------------------------------------------


def thaw(state: Mapping[str, Any]) -> dict[str, Any]:
    """A private deep copy of the stored state, so a step never mutates what the runner handed in."""
    return copy.deepcopy(dict(state))


def finish(
    state: dict[str, Any],
    *,
    status: str,
    result: Any = None,
    error: dict[str, Any] | None = None,
    round: int = 0,
) -> Decision:
    """End the session, remembering the outcome in state so a re-delivered subtask replays the same answer."""
    state["final"] = {"status": status, "result": result, "error": error, "round": round}
    return replay_final(state)


def replay_final(state: dict[str, Any]) -> Decision:
    final = state["final"]
    # Copies, so a caller that edits the result cannot reach into the state it is about to store.
    return Decision(
        state=state,
        done=True,
        status=final["status"],
        result=copy.deepcopy(final["result"]),
        error=copy.deepcopy(final["error"]),
        round=final["round"],
    )


def failure(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **details}


def describe_failure(subtask: FinishedSubtask) -> str:
    """A one-line reason for a subtask that did not succeed, quoting the agent's message when there is one."""
    reason = subtask.error.get("message") if subtask.error else None
    return f"{subtask.key} {subtask.status}" + (f": {reason}" if reason else "")


def plain_error(error: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if error is None else to_json(dict(error))


# --- JSON values ------------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """Copy a value into plain JSON types (dict/list/str/number/bool/None) so state always serialises."""
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _canonical(value: Any) -> Any:
    # Postgres JSONB keeps 1.0 and 1 apart, but two agents answering 1 and 1.0 agree.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def normalise(value: Any) -> str:
    """A canonical JSON text: equal for values that agree regardless of key order or 1 vs 1.0."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def lookup(value: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path ("a.b.0.c"): names index objects, non-negative integers index lists.

    Returns (found, value); "" is the whole value. A tuple rather than a sentinel keeps the caller's types
    honest about the difference between a missing key and a present null.
    """
    if path == "":
        return True, value
    current = value
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return False, None
            current = current[part]
        elif isinstance(current, list | tuple) and part.isdecimal() and int(part) < len(current):
            current = current[int(part)]
        else:
            return False, None
    return True, current


# --- params -----------------------------------------------------------------------------------------------


def check_known(params: Mapping[str, Any], known: frozenset[str], where: str = "params") -> None:
    """Refuse unknown keys: a misspelt param would otherwise be silently replaced by its default."""
    unknown = sorted(str(key) for key in params if key not in known)
    if unknown:
        raise SpecError(f"{where}: unknown {', '.join(unknown)} (allowed: {', '.join(sorted(known))})")


def int_param(params: Mapping[str, Any], name: str, *, default: int | None, minimum: int = 1) -> int:
    value = params.get(name, default)
    if value is None:
        raise SpecError(f"params.{name} is required")
    # bool is an int subclass; `chunk_size: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"params.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"params.{name} must be >= {minimum}, got {value}")
    return value


def str_param(
    params: Mapping[str, Any], name: str, *, default: str | None = None, where: str = "params"
) -> str:
    value = params.get(name, default)
    if value is None:
        raise SpecError(f"{where}.{name} is required")
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}.{name} must be a non-empty string, got {value!r}")
    return value


def bool_param(params: Mapping[str, Any], name: str, *, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise SpecError(f"params.{name} must be true or false, got {value!r}")
    return value
