"""chain: ordered steps, one subtask each, each input built from the session payload and earlier outputs.

Params: steps, a non-empty list of {name, capability, input?, type?}. `input` is a template: any JSON value in
which a string starting with "$" is a path ("$input.a.b" into the session payload, "$steps.<name>.output.a.b"
into an earlier step's output; a path segment that is a non-negative integer indexes a list), "$$" escapes a
literal leading dollar, and everything else is taken as written. A template must render to an object (it
becomes a task payload), so its top level is an object or a single path. Without `input`, the first step gets
the session payload and later ones {"input": <session payload>, "previous": <previous step's output>}.

Paths are checked twice: their form and that they only name earlier steps at validate() (a SpecError, before
anything is stored), and that the value exists at render time (a "template_error" failure naming the path and
the step), since outputs are only known then.

State: {"index": i (the step in flight), "outputs": {name: output}, "final": ...}.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
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
    describe_failure,
    failure,
    finish,
    lookup,
    replay_final,
    str_param,
    thaw,
    to_json,
)

PARAMS = frozenset({"steps"})
STEP_FIELDS = frozenset({"name", "capability", "input", "type"})
_NO_INPUT = object()


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    capability: str
    type: str
    template: Any  # _NO_INPUT when the step has no input template


class _TemplateError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def validate(spec: SessionSpec) -> None:
    _parse(spec)


def step(spec: SessionSpec, state: Mapping[str, Any], finished: Sequence[FinishedSubtask]) -> Decision:
    new = thaw(state)
    if "final" in new:
        return replay_final(new)
    steps = _parse(spec)
    if not new:
        new = {"index": 0, "outputs": {}}
        return _start(spec, steps, new)

    index: int = new["index"]
    current = steps[index]
    # Only the step in flight matters; an earlier step's key is a re-delivery of something recorded.
    done = next((subtask for subtask in finished if subtask.key == subtask_key(current.name)), None)
    if done is None:
        return Decision(state=new, round=index)
    if done.status != SUCCEEDED:
        error = failure("step_failed", describe_failure(done), step=current.name, subtask=done.key)
        return finish(new, status=FAILED, error=error, round=index)
    output = to_json(done.output)
    new["outputs"][current.name] = output
    if index + 1 == len(steps):
        return finish(new, status=SUCCEEDED, result=output, round=index)
    new["index"] = index + 1
    return _start(spec, steps, new)


def subtask_key(name: str) -> str:
    return f"step-{name}"


def _start(spec: SessionSpec, steps: tuple[_Step, ...], state: dict[str, Any]) -> Decision:
    """Render the input of the step at state["index"] and submit it."""
    index: int = state["index"]
    current = steps[index]
    payload = to_json(spec.payload)
    outputs: dict[str, Any] = state["outputs"]
    try:
        if current.template is not _NO_INPUT:
            rendered = _render(current.template, payload, outputs)
        elif index == 0:
            rendered = payload
        else:
            rendered = {"input": payload, "previous": outputs[steps[index - 1].name]}
        if not isinstance(rendered, dict):
            raise _TemplateError(
                str(current.template), f"input rendered to {type(rendered).__name__}, not an object"
            )
    except _TemplateError as exc:
        message = f"step {current.name!r}: {exc}"
        error = failure("template_error", message, step=current.name, path=exc.path)
        return finish(state, status=FAILED, error=error, round=index)
    subtask = SubtaskSpec(
        key=subtask_key(current.name),
        type=current.type,
        capabilities=(current.capability,),
        payload=copy.deepcopy(rendered),  # it may be an earlier output, which the state holds too
        agent_ids=spec.participants or None,
    )
    return Decision(state=state, submit=(subtask,), round=index)


def _render(template: Any, payload: dict[str, Any], outputs: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        if template.startswith("$$"):
            return template[1:]
        if template.startswith("$"):
            return _resolve(template, payload, outputs)
        return template
    if isinstance(template, Mapping):
        return {key: _render(value, payload, outputs) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [_render(value, payload, outputs) for value in template]
    return template


def _resolve(path: str, payload: dict[str, Any], outputs: Mapping[str, Any]) -> Any:
    root, name, rest = _split_path(path)
    if root == "input":
        found, value = lookup(payload, rest)
    elif name in outputs:
        found, value = lookup(outputs[name], rest)
    else:
        found, value = False, None
    if not found:
        raise _TemplateError(path, f"{path} not found")
    return value


def _split_path(path: str) -> tuple[str, str, str]:
    """("input", "", "a.b") or ("steps", <name>, "a.b"); SpecError for any other form."""
    root, _, rest = path[1:].partition(".")
    if root == "input":
        return root, "", rest
    if root == "steps":
        name, _, after = rest.partition(".")
        field, _, sub = after.partition(".")
        if name and field == "output":
            return root, name, sub
    raise SpecError(
        f"bad path {path!r}: use $input[.path] or $steps.<name>.output[.path] ($$ for a literal $)"
    )


def _paths(template: Any) -> Iterator[str]:
    if isinstance(template, str):
        if template.startswith("$") and not template.startswith("$$"):
            yield template
    elif isinstance(template, Mapping):
        for value in template.values():
            yield from _paths(value)
    elif isinstance(template, list | tuple):
        for value in template:
            yield from _paths(value)


def _parse(spec: SessionSpec) -> tuple[_Step, ...]:
    check_known(spec.params, PARAMS)
    raw_steps = spec.params.get("steps")
    if not isinstance(raw_steps, list | tuple) or not raw_steps:
        raise SpecError("params.steps must be a non-empty list of steps")
    steps: list[_Step] = []
    for number, raw in enumerate(raw_steps):
        where = f"params.steps[{number}]"
        if not isinstance(raw, Mapping):
            raise SpecError(f"{where} must be an object with name and capability")
        check_known(raw, STEP_FIELDS, where=where)
        name = str_param(raw, "name", where=where)
        capability = str_param(raw, "capability", where=where)
        task_type = str_param(raw, "type", default=spec.task_type, where=where)
        if "." in name or name.startswith("$"):
            raise SpecError(f"{where}.name {name!r} must not contain '.' or start with '$'")
        earlier = {previous.name for previous in steps}
        if name in earlier:
            raise SpecError(f"{where}.name {name!r} is used by an earlier step")
        template = raw.get("input", _NO_INPUT)
        if template is not _NO_INPUT:
            _check_template(template, earlier, f"{where}.input")
        steps.append(_Step(name=name, capability=capability, type=task_type, template=template))
    return tuple(steps)


def _check_template(template: Any, earlier: set[str], where: str) -> None:
    is_path = isinstance(template, str) and template.startswith("$") and not template.startswith("$$")
    if not isinstance(template, Mapping) and not is_path:
        raise SpecError(f"{where} must be an object or a $path, since it becomes the task payload")
    for path in _paths(template):
        try:
            root, name, _ = _split_path(path)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
        if root == "steps" and name not in earlier:
            raise SpecError(f"{where}: {path!r} names step {name!r}, which does not run before this one")
