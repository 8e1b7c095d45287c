"""map_reduce: split a list in the payload into chunks, one subtask per chunk, then reduce the outputs.

Params: split_field (required), chunk_size (int >= 1, required), max_parallel (int >= 1, default
spec.max_parallel), reducer (concat | sum | merge | vote | agent, default concat), reduce_capability (required
for agent), reduce_type (agent only, default the session's task type), allow_partial (default false).

A string field is split with str.splitlines(), so each map subtask receives a list of lines. Reducing nothing
gives the reducer's identity: concat [], sum 0, merge {}, vote None; the agent reducer still runs, on [].

With allow_partial, failed chunks are left out of the reduction: the session still succeeds with the reduced
output as its result, and state["missing"] names the chunks that did not contribute (the reduce agent also
receives them as payload["missing"]). A session whose every chunk failed fails even then: an empty reduction
would look like a real answer.

State: {"chunks": n, "next": index of the next chunk to submit, "outputs": {key: output},
"failed": {key: {"status", "error", "agent_id"}}, "reduce_submitted": bool, "missing": [...], "final": ...}.
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
    bool_param,
    check_known,
    describe_failure,
    failure,
    finish,
    int_param,
    normalise,
    plain_error,
    replay_final,
    str_param,
    thaw,
    to_json,
)

REDUCERS = ("concat", "sum", "merge", "vote", "agent")
PARAMS = frozenset(
    {
        "split_field",
        "chunk_size",
        "max_parallel",
        "reducer",
        "reduce_capability",
        "reduce_type",
        "allow_partial",
    }
)
REDUCE_KEY = "reduce"


@dataclass(frozen=True, slots=True)
class _Params:
    split_field: str
    chunk_size: int
    max_parallel: int
    reducer: str
    reduce_capability: str | None
    reduce_type: str
    allow_partial: bool


class _ReduceError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def validate(spec: SessionSpec) -> None:
    _parse(spec)


def step(spec: SessionSpec, state: Mapping[str, Any], finished: Sequence[FinishedSubtask]) -> Decision:
    new = thaw(state)
    if "final" in new:
        return replay_final(new)
    params, chunks = _parse(spec)
    if not new:
        new = {"chunks": len(chunks), "next": 0, "outputs": {}, "failed": {}, "reduce_submitted": False}
    outputs: dict[str, Any] = new["outputs"]
    failed: dict[str, Any] = new["failed"]

    for subtask in finished:
        if subtask.key == REDUCE_KEY:
            if new["reduce_submitted"]:
                return _finish_reduce(new, subtask)
            continue
        # Unknown, never-submitted or already-recorded keys: a re-delivery must change nothing.
        if _map_index(subtask.key, new["next"]) is None or subtask.key in outputs or subtask.key in failed:
            continue
        if subtask.status == SUCCEEDED:
            outputs[subtask.key] = to_json(subtask.output)
        else:
            failed[subtask.key] = {
                "status": subtask.status,
                "error": plain_error(subtask.error),
                "agent_id": subtask.agent_id,
                "message": describe_failure(subtask),
            }

    if failed and not params.allow_partial:
        first = min(failed, key=lambda key: int(key.removeprefix("map-")))
        return finish(
            new,
            status=FAILED,
            error=failure("subtask_failed", failed[first]["message"], subtask=first),
        )

    submit: list[SubtaskSpec] = []
    open_count = new["next"] - len(outputs) - len(failed)
    while new["next"] < len(chunks) and open_count < params.max_parallel:
        submit.append(_map_subtask(spec, params, new["next"], chunks[new["next"]]))
        new["next"] += 1
        open_count += 1

    if new["next"] < len(chunks) or open_count > 0 or new["reduce_submitted"]:
        return Decision(state=new, submit=tuple(submit))
    return _reduce_phase(spec, params, new, len(chunks))


def _reduce_phase(spec: SessionSpec, params: _Params, state: dict[str, Any], count: int) -> Decision:
    """Every chunk has finished: reduce here, or hand the outputs to a reduce agent."""
    keys = [f"map-{index}" for index in range(count)]
    done = [(key, state["outputs"][key]) for key in keys if key in state["outputs"]]
    missing = [key for key in keys if key in state["failed"]]
    state["missing"] = missing
    if count > 0 and not done:
        return finish(
            state,
            status=FAILED,
            error=failure("subtask_failed", f"every map subtask failed ({count})", subtask=missing[0]),
        )
    if params.reducer == "agent":
        assert params.reduce_capability is not None  # _parse guarantees it for the agent reducer
        payload: dict[str, Any] = {
            "outputs": copy.deepcopy([output for _, output in done]),
            "input": {k: v for k, v in to_json(spec.payload).items() if k != params.split_field},
        }
        if missing:
            payload["missing"] = list(missing)
        state["reduce_submitted"] = True
        reduce = SubtaskSpec(REDUCE_KEY, params.reduce_type, (params.reduce_capability,), payload, None)
        return Decision(state=state, submit=(reduce,))
    try:
        result = _REDUCE[params.reducer](done)
    except _ReduceError as exc:
        return finish(state, status=FAILED, error=failure("reduce_failed", str(exc), subtask=exc.key))
    return finish(state, status=SUCCEEDED, result=result)


def _finish_reduce(state: dict[str, Any], subtask: FinishedSubtask) -> Decision:
    if subtask.status == SUCCEEDED:
        return finish(state, status=SUCCEEDED, result=to_json(subtask.output))
    return finish(
        state, status=FAILED, error=failure("subtask_failed", describe_failure(subtask), subtask=REDUCE_KEY)
    )


def _map_subtask(spec: SessionSpec, params: _Params, index: int, chunk: list[Any]) -> SubtaskSpec:
    payload: dict[str, Any] = to_json(spec.payload)
    payload[params.split_field] = chunk
    return SubtaskSpec(
        key=f"map-{index}",
        type=spec.task_type,
        capabilities=spec.capabilities,
        payload=payload,
        agent_ids=spec.participants or None,
    )


def _map_index(key: str, submitted: int) -> int | None:
    """The chunk index of a map key this session has submitted, else None."""
    prefix, _, digits = key.partition("-")
    if prefix != "map" or not digits.isdecimal() or str(int(digits)) != digits:
        return None
    index = int(digits)
    return index if index < submitted else None


def _parse(spec: SessionSpec) -> tuple[_Params, list[list[Any]]]:
    raw = spec.params
    check_known(raw, PARAMS)
    reducer = raw.get("reducer", "concat")
    if reducer not in REDUCERS:
        raise SpecError(f"params.reducer must be one of {', '.join(REDUCERS)}, got {reducer!r}")
    params = _Params(
        split_field=str_param(raw, "split_field"),
        chunk_size=int_param(raw, "chunk_size", default=None),
        max_parallel=int_param(raw, "max_parallel", default=spec.max_parallel),
        reducer=reducer,
        reduce_capability=str_param(raw, "reduce_capability") if reducer == "agent" else None,
        reduce_type=str_param(raw, "reduce_type", default=spec.task_type),
        allow_partial=bool_param(raw, "allow_partial", default=False),
    )
    field = params.split_field
    if field not in spec.payload:
        raise SpecError(f"payload.{field} is missing (named by params.split_field)")
    value = spec.payload[field]
    if isinstance(value, str):
        items: list[Any] = value.splitlines()
    elif isinstance(value, list | tuple):
        items = to_json(list(value))
    else:
        raise SpecError(f"payload.{field} must be a list or a string, got {type(value).__name__}")
    size = params.chunk_size
    return params, [items[start : start + size] for start in range(0, len(items), size)]


# --- reducers: each takes (key, output) pairs in chunk order ----------------------------------------------


def _concat(outputs: list[tuple[str, Any]]) -> Any:
    result: list[Any] = []
    for _, output in outputs:
        if isinstance(output, list):
            result.extend(output)
        else:
            result.append(output)
    return result


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but true + true = 2 is never what a word count meant.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _add(total: Any, value: Any, key: str, path: str) -> Any:
    """total + value for numbers, key by key (recursively) for objects; `total is None` means nothing yet."""
    if _is_number(value) and (total is None or _is_number(total)):
        return value if total is None else total + value
    if isinstance(value, dict) and (total is None or isinstance(total, dict)):
        result = dict(total or {})
        for name, item in value.items():
            result[name] = _add(result.get(name), item, key, f"{path}.{name}" if path else name)
        return result
    where = f"output of {key} at {path!r}" if path else f"output of {key}"
    if _is_number(value) or isinstance(value, dict):
        raise _ReduceError(key, f"sum: {where} is {_kind(value)} where earlier chunks have {_kind(total)}")
    raise _ReduceError(key, f"sum: {where} is {_kind(value)}, not a number or an object of numbers")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if _is_number(value):
        return "a number"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


def _sum(outputs: list[tuple[str, Any]]) -> Any:
    total: Any = None
    for key, output in outputs:
        total = _add(total, output, key, "")
    return 0 if total is None else total


def _merge(outputs: list[tuple[str, Any]]) -> Any:
    result: dict[str, Any] = {}
    for key, output in outputs:
        if not isinstance(output, dict):
            raise _ReduceError(key, f"merge: output of {key} is {_kind(output)}, not an object")
        result.update(output)
    return result


def _vote(outputs: list[tuple[str, Any]]) -> Any:
    counts: dict[str, int] = {}
    first: dict[str, Any] = {}
    for _, output in outputs:
        norm = normalise(output)
        counts[norm] = counts.get(norm, 0) + 1
        first.setdefault(norm, output)
    if not counts:
        return None
    # max() keeps the first of equal counts and dicts keep insertion order: ties go to the first seen.
    return first[max(counts, key=lambda norm: counts[norm])]


_REDUCE = {"concat": _concat, "sum": _sum, "merge": _merge, "vote": _vote}
