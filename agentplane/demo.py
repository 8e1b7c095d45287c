"""Built-in demo handlers: deterministic, real work, no model behind them.

They let a fresh install show routing, map_reduce, consensus and chains end to end (`agentplane agent
--demo`). Each handler validates its payload (a bad one fails the task with code `invalid_payload`) and
reports usage as if words were tokens: input tokens = words in the payload's JSON, output tokens = words in
the output's JSON, cost = tokens x DEMO_PRICE_PER_TOKEN, so cost tracking has numbers to show.

Task types (payload -> output):

- `word-count`: `{"lines": [str]}` and/or `{"text": str}` -> `{word: count}`, lower-cased, keys sorted
- `text-stats`: `{"text": str}` -> `{"characters", "words", "lines", "sentences", "average_word_length"}`
- `json-transform`: `{"data": {...}, "pick"?: [key], "rename"?: {old: new}}` -> the picked, renamed object
- `echo`: anything -> the payload
- `sleep`: `{"ms": int}` (0 to 3 600 000) -> `{"slept_ms": ms}`, with progress; a cancel interrupts it
- `generate`: `{"spec": str, "name"?: str, "params"?: [str]}` -> `{"code", "language", "name"}`
- `review`: `{"code": str, ...}` -> `{"code", "comments": [str], "approved": bool}`
- `refactor`: `{"code": str, ...}` -> `{"code", "changes": [str]}`
- `answer`: `{"answer": any}` or `{"question": str}` -> `{"answer": ...}`

`word-count` returns a flat `{word: count}` object so a map_reduce `sum` reducer can add chunk outputs key by
key. `generate` -> `review` -> `refactor` chain: each accepts the previous step's output as its payload (the
`code` may also sit one level down, e.g. `{"input": {"code": ...}}`).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from agentplane.sdk import Agent, CapabilitySpec, Handler, HandlerResult, TaskContext, TaskFailed, Usage

DEMO_AGENT_NAME = "agentplane demo agent"
DEMO_PRICE_PER_TOKEN = 0.000002
MAX_SLEEP_MS = 3_600_000
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, in any script
_SENTENCE_END = re.compile(r"[.!?]+")
_DEF = re.compile(r"^(?P<indent>\s*)def (?P<name>\w+)\(.*\).*:\s*$")
_DOCSTRING = re.compile(r"^\s*[rbuRBU]?(\"\"\"|''')")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _invalid(message: str) -> TaskFailed:
    return TaskFailed("invalid_payload", message)


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str):
        raise _invalid(f"payload.{key} must be a string")
    return value


# ---------------------------------------------------------------- text


def word_count(payload: dict[str, Any]) -> dict[str, int]:
    """Count lower-cased words in payload["lines"] and payload["text"] (either or both)."""
    if "lines" not in payload and "text" not in payload:
        raise _invalid("payload needs `lines` (a list of strings) or `text` (a string)")
    lines = payload.get("lines", [])
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise _invalid("payload.lines must be a list of strings")
    texts = [*lines, _text(payload, "text")] if "text" in payload else lines
    counts = Counter(word for text in texts for word in words(text))
    return dict(sorted(counts.items()))


def text_stats(payload: dict[str, Any]) -> dict[str, Any]:
    text = _text(payload, "text")
    found = words(text)
    sentences = [part for part in _SENTENCE_END.split(text) if words(part)]
    average = round(sum(len(word) for word in found) / len(found), 2) if found else 0.0
    return {
        "characters": len(text),
        "words": len(found),
        "lines": len(text.splitlines()),
        "sentences": len(sentences),
        "average_word_length": average,
    }


def json_transform(payload: dict[str, Any]) -> dict[str, Any]:
    """Keep the `pick` keys of `data` (in pick order, missing ones skipped), then apply `rename`."""
    data, pick, rename = payload.get("data"), payload.get("pick"), payload.get("rename", {})
    if not isinstance(data, dict):
        raise _invalid("payload.data must be an object")
    if pick is not None and (not isinstance(pick, list) or not all(isinstance(key, str) for key in pick)):
        raise _invalid("payload.pick must be a list of strings")
    if not isinstance(rename, dict) or not all(isinstance(new, str) for new in rename.values()):
        raise _invalid("payload.rename must map keys to new names (strings)")
    names: dict[str, str] = rename
    kept: dict[str, Any] = data if pick is None else {key: data[key] for key in pick if key in data}
    return {names.get(key, key): value for key, value in kept.items()}


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


# ---------------------------------------------------------------- code chain


def _code(payload: dict[str, Any]) -> str:
    """payload["code"], or the `code` of an object one level down (a chain may wrap the previous output)."""
    if isinstance(payload.get("code"), str):
        return str(payload["code"])
    for value in payload.values():
        if isinstance(value, dict) and isinstance(value.get("code"), str):
            return str(value["code"])
    raise _invalid("payload.code must be a string")


def _identifier(text: str) -> str:
    name = "_".join(words(text)[:6]) or "generated"
    return name if name.isidentifier() and not name[0].isdigit() else f"fn_{name}"


def generate(payload: dict[str, Any]) -> dict[str, Any]:
    """A Python function stub for payload["spec"]: named after the spec, documented with it."""
    spec = _text(payload, "spec").strip()
    name = _identifier(str(payload.get("name") or spec))
    params = payload.get("params", [])
    if not isinstance(params, list) or not all(isinstance(p, str) and p.isidentifier() for p in params):
        raise _invalid("payload.params must be a list of identifiers")
    summary = " ".join(spec.split()) or "Generated function"
    summary = summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else ".")
    code = f'def {name}({", ".join(params)}):\n    """{summary}"""\n    raise NotImplementedError({spec!r})\n'
    return {"code": code, "language": "python", "name": name}


def review(payload: dict[str, Any]) -> dict[str, Any]:
    """Line-by-line review comments; approved when there are none."""
    code = _code(payload)
    comments: list[str] = [] if code.strip() else ["the code is empty"]
    lines = code.splitlines()
    for number, line in enumerate(lines, start=1):
        if len(line) > 100:
            comments.append(f"line {number}: longer than 100 characters")
        if line != line.rstrip():
            comments.append(f"line {number}: trailing whitespace")
        if "\t" in line:
            comments.append(f"line {number}: tab indentation")
        if "TODO" in line or "FIXME" in line:
            comments.append(f"line {number}: unresolved TODO/FIXME")
        if "raise NotImplementedError" in line:
            comments.append(f"line {number}: the function is still a stub")
        if re.search(r"\bprint\(", line):
            comments.append(f"line {number}: print() left in; use logging")
        if re.match(r"\s*except\s*:", line):
            comments.append(f"line {number}: bare except")
        if (match := _DEF.match(line)) and not _has_docstring(lines, number):
            comments.append(f"line {number}: function `{match['name']}` has no docstring")
    return {"code": code, "comments": comments, "approved": not comments}


def _has_docstring(lines: list[str], def_line_number: int) -> bool:
    following = [line for line in lines[def_line_number:] if line.strip()]
    return bool(following) and _DOCSTRING.match(following[0]) is not None


def refactor(payload: dict[str, Any]) -> dict[str, Any]:
    """Whitespace clean-up, `except Exception:` for bare excepts, docstrings for undocumented functions."""
    original = _code(payload)
    changes: list[str] = []
    lines = [line.expandtabs(4).rstrip() for line in original.splitlines()]
    if lines != original.splitlines():
        changes.append("normalised whitespace (tabs, trailing spaces)")
    fixed = [re.sub(r"^(\s*)except\s*:", r"\1except Exception:", line) for line in lines]
    if fixed != lines:
        changes.append("replaced bare `except:` with `except Exception:`")
    documented: list[str] = []
    for number, line in enumerate(fixed, start=1):
        documented.append(line)
        if (match := _DEF.match(line)) and not _has_docstring(fixed, number):
            title = match["name"].strip("_").replace("_", " ").capitalize() or "Function"
            documented.append(f'{match["indent"]}    """{title}."""')
            changes.append(f"documented `{match['name']}`")
    joined = "\n".join(documented).strip("\n")
    collapsed = re.sub(r"\n{3,}", "\n\n", joined)
    if collapsed != joined:
        changes.append("collapsed runs of blank lines")
    return {"code": collapsed + "\n", "changes": changes}


# ---------------------------------------------------------------- consensus

_OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_YES_NO = ("is ", "are ", "do ", "does ", "can ", "should ", "will ", "was ", "were ", "has ", "have ")


def _evaluate(node: ast.AST) -> float:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise ValueError("exponent too large")
        result = float(_OPERATORS[type(node.op)](left, right))
        if not math.isfinite(result):
            raise ValueError("not a finite number")
        return result
    raise ValueError("not arithmetic")


def answer(payload: dict[str, Any]) -> dict[str, Any]:
    """payload["answer"] when given (to stage agreement or disagreement); else the value of an arithmetic
    question ("what is 6 * 7?" -> 42), "yes"/"no" for a yes/no question, or a digest of the question."""
    if "answer" in payload:
        return {"answer": payload["answer"]}
    question = " ".join(_text(payload, "question").lower().split())
    expression = re.sub(r"^(what is|what's|compute|calculate)\s+", "", question).rstrip("?= ")
    try:
        value = _evaluate(ast.parse(expression, mode="eval").body)
    except ZeroDivisionError as exc:
        raise _invalid("the question divides by zero") from exc
    except (SyntaxError, ValueError, OverflowError):
        digest = hashlib.sha256(question.encode()).hexdigest()
        if question.startswith(_YES_NO):
            return {"answer": "yes" if int(digest, 16) % 2 == 0 else "no"}
        return {"answer": f"sha256:{digest[:12]}"}
    exact = value.is_integer() and abs(value) < 2**53  # beyond that a float is not an exact integer
    return {"answer": int(value) if exact else round(value, 10)}


# ---------------------------------------------------------------- handlers


def _tokens(value: Any) -> int:
    return len(_WORD.findall(orjson.dumps(value).decode()))


def _usage(payload: Any, output: Any) -> Usage:
    input_tokens, output_tokens = _tokens(payload), _tokens(output)
    cost = round((input_tokens + output_tokens) * DEMO_PRICE_PER_TOKEN, 9)
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost=cost)


def metered(work: Callable[[dict[str, Any]], Any]) -> Callable[[TaskContext], HandlerResult]:
    """A sync handler running `work` on the payload and reporting words as tokens."""

    def handle(ctx: TaskContext) -> HandlerResult:
        output = work(ctx.payload)
        return HandlerResult(output=output, usage=_usage(ctx.payload, output))

    handle.__name__ = handle.__qualname__ = work.__name__
    handle.__doc__ = work.__doc__
    return handle


async def sleep(ctx: TaskContext) -> HandlerResult:
    """Sleep payload["ms"] milliseconds in ten steps with progress; a cancel interrupts it at once."""
    ms = ctx.payload.get("ms")
    if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= MAX_SLEEP_MS:
        raise _invalid(f"payload.ms must be an integer from 0 to {MAX_SLEEP_MS}")
    for step in range(1, 11):
        await asyncio.sleep(ms / 10_000)
        await ctx.progress(step / 10, f"slept {ms * step // 10} of {ms} ms")
    output = {"slept_ms": ms}
    return HandlerResult(output=output, usage=_usage(ctx.payload, output))


DEMO_HANDLERS: dict[str, Handler] = {
    "word-count": metered(word_count),
    "text-stats": metered(text_stats),
    "json-transform": metered(json_transform),
    "echo": metered(echo),
    "sleep": sleep,
    "generate": metered(generate),
    "review": metered(review),
    "refactor": metered(refactor),
    "answer": metered(answer),
}


def build_demo_agent(
    url: str | Sequence[str] | None,
    key: str,
    *,
    model: str = "demo-1",
    agent_id: str | None = None,
    max_concurrency: int = 4,
    name: str = DEMO_AGENT_NAME,
    capabilities: Sequence[str | CapabilitySpec] | None = None,
) -> Agent:
    """An agent serving every demo handler. Unless `capabilities` is given it advertises one capability per
    handled task type (decided at run(), so handlers added to it afterwards are advertised too)."""
    agent = Agent(
        url,
        key,
        model,
        capabilities,
        max_concurrency=max_concurrency,
        agent_id=agent_id,
        name=name,
    )
    for task_type, handler in DEMO_HANDLERS.items():
        agent.add_handler(task_type, handler)
    return agent
