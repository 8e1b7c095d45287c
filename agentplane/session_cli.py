"""`agentplane session run | watch | cancel`: collaboration sessions from the command line, over the REST API.

    agentplane session run --strategy map_reduce --file spec.json --watch

The file holds the request body without its strategy ({task, participants, params, budget, timeout}).
With --watch a live table of subtasks is drawn on stderr until the session ends; the session's result (or its
error) is printed as JSON on stdout, so the command composes with jq. Exit status: 0 when the session
succeeded (or, without --watch, was created), 1 when it failed or was cancelled, 2 for a bad invocation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agentplane.client import ApiError, Client, Unreachable, api_key
from agentplane.urls import DEFAULT_URL, KEY_ENV, URL_ENV, ServerUrlError

STRATEGIES = ("map_reduce", "consensus", "chain")
REFRESH = 0.5  # seconds between looks at the session while watching
_STATUS_STYLE = {
    "pending": "dim",
    "assigned": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timed_out": "red",
}


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_parser(subparsers: Any) -> None:
    session = subparsers.add_parser("session", help="run, watch and cancel collaboration sessions")
    commands = session.add_subparsers(dest="session_command", required=True)

    run = commands.add_parser("run", help="start a session from a JSON file")
    run.add_argument("--strategy", required=True, choices=STRATEGIES)
    run.add_argument("--file", required=True, type=Path, help="the request body as JSON ('-' for stdin)")
    run.add_argument("--watch", action="store_true", help="show the subtasks live until the session ends")
    _connection_args(run)
    run.set_defaults(func=cmd_run)

    watch = commands.add_parser("watch", help="show a session's subtasks live until it ends")
    watch.add_argument("session_id")
    _connection_args(watch)
    watch.set_defaults(func=cmd_watch)

    cancel = commands.add_parser("cancel", help="cancel a running session and its open subtasks")
    cancel.add_argument("session_id")
    _connection_args(cancel)
    cancel.set_defaults(func=cmd_cancel)


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the server (default ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--key", help=f"an API key with the client scope (default ${KEY_ENV})")


def _client(args: argparse.Namespace) -> Client:
    key = api_key(args.key)
    if not key:
        raise CliError(f"an API key is required: --key or ${KEY_ENV}", 2)
    try:
        return Client(args.url, key)
    except ServerUrlError as exc:
        raise CliError(str(exc), 2) from None


def _read_body(path: Path, strategy: str) -> dict[str, Any]:
    try:
        raw = sys.stdin.read() if str(path) == "-" else path.read_text()
        body = json.loads(raw)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", 2) from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}", 2) from None
    if not isinstance(body, dict):
        raise CliError(f"{path} must hold a JSON object (the session request)", 2)
    if body.get("strategy", strategy) != strategy:
        raise CliError(f"{path} says strategy {body['strategy']!r} but --strategy is {strategy!r}", 2)
    return {**body, "strategy": strategy}


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _outcome(session: dict[str, Any]) -> int:
    """Print the result (or the error) and return the exit status."""
    if session["status"] == "succeeded":
        _print_json(session["result"])
        return 0
    _print_json({"status": session["status"], "error": session["error"]})
    return 1


def render(session: dict[str, Any]) -> Group:
    """The live view: one row per subtask, and a line of totals."""
    table = Table(title=f"session {session['id']} ({session['strategy']})", expand=False)
    for column in ("key", "status", "agent"):
        table.add_column(column)
    table.add_column("cost", justify="right")
    for subtask in session.get("subtasks") or []:
        status = subtask["status"]
        table.add_row(
            subtask["key"],
            Text(status, style=_STATUS_STYLE.get(status, "")),
            subtask["agent_id"] or "-",
            f"{subtask['cost']:.6f}",
        )
    budget = session["budget"]
    spent = f"cost {session['cost']:.6f}" + (f" of {budget:.6f}" if budget is not None else "")
    summary = Text(f"{session['status']} · round {session['round']} · {spent}")
    return Group(table, summary)


def progress(session: dict[str, Any]) -> str:
    """The view as one line, for a stderr that is not a terminal (a log, a pipe, CI)."""
    subtasks = ", ".join(f"{sub['key']} {sub['status']}" for sub in session.get("subtasks") or [])
    return (
        f"session {session['id']} {session['status']} · round {session['round']} · "
        f"cost {session['cost']:.6f} · subtasks: {subtasks or '-'}"
    )


def watch(client: Client, session_id: str) -> dict[str, Any]:
    """Redraw the subtasks until the session ends; returns its final view."""
    console = Console(stderr=True)  # stdout is for the result, so it can be piped
    session = client.get_session(session_id)
    if not console.is_terminal:
        # A live table needs a terminal (rich would draw only the last frame): a line per change instead.
        shown = ""
        while True:
            line = progress(session)
            if line != shown:
                print(line, file=sys.stderr, flush=True)
                shown = line
            if session["status"] != "running":
                return session
            time.sleep(REFRESH)
            session = client.get_session(session_id)
    with Live(render(session), console=console, refresh_per_second=4, transient=False) as live:
        while session["status"] == "running":
            time.sleep(REFRESH)
            session = client.get_session(session_id)
            live.update(render(session))
    return session


def _guarded(args: argparse.Namespace, work: Any) -> int:
    try:
        with _client(args) as client:
            code: int = work(client)
            return code
    except CliError as exc:
        print(f"agentplane: {exc}", file=sys.stderr)
        return exc.code
    except ApiError as exc:
        for line in exc.lines():
            print(line if line.startswith(" ") else f"agentplane: {line}", file=sys.stderr)
        return 1
    except Unreachable as exc:  # the URL is redacted: no password in the message
        print(f"agentplane: {exc}", file=sys.stderr)
        return 1


def cmd_run(args: argparse.Namespace) -> int:
    def run(client: Client) -> int:
        created = client.create_session(_read_body(args.file, args.strategy))
        if not args.watch:
            _print_json(created)
            return 0
        print(f"session {created['id']}", file=sys.stderr)
        return _outcome(watch(client, created["id"]))

    return _guarded(args, run)


def cmd_watch(args: argparse.Namespace) -> int:
    return _guarded(args, lambda client: _outcome(watch(client, args.session_id)))


def cmd_cancel(args: argparse.Namespace) -> int:
    def cancel(client: Client) -> int:
        _print_json(client.cancel_session(args.session_id))
        return 0

    return _guarded(args, cancel)
