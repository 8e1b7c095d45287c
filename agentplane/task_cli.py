"""`agentplane task submit | get | cancel | watch`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from agentplane.client import ApiError, Client, Unreachable, api_key
from agentplane.urls import DEFAULT_URL, KEY_ENV, URL_ENV, ServerUrlError


def add_parser(subparsers: Any) -> None:
    # --url and --key are accepted after the subcommand too (`agentplane task submit --key …`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the server (default ${URL_ENV} or {DEFAULT_URL})")
    common.add_argument("--key", help=f"a client key (default: ${KEY_ENV})")
    task = subparsers.add_parser("task", help="submit and follow tasks")
    sub = task.add_subparsers(dest="task_command", required=True)
    submit = sub.add_parser(
        "submit", parents=[common], help="submit a task and print it (or its result with --wait)"
    )
    submit.add_argument("--type", required=True)
    submit.add_argument("--capability", action="append", required=True, help="repeat for several")
    submit.add_argument("--payload", default="{}", help="a JSON object")
    submit.add_argument("--priority", type=int)
    submit.add_argument("--timeout", help="lease per attempt: 30s, 5m or seconds")
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="wait for the result and print it")
    for name in ("get", "cancel", "watch"):
        command = sub.add_parser(name, parents=[common], help=f"{name} a task")
        command.add_argument("task_id")
    task.set_defaults(func=cmd_task)


def _print(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


class _Waiting:
    """`submit --wait` says on stderr why the task waits, once per new reason, so it never hangs silently."""

    def __init__(self) -> None:
        self.last: str | None = None

    def report(self, task: dict[str, Any]) -> None:
        waiting = task.get("waiting") or {}
        reason = waiting.get("reason")
        if not reason or reason == self.last:
            return
        self.last = reason
        print(f"agentplane: task {task['id']} is waiting: {reason}", file=sys.stderr)
        for refusal in waiting.get("refusals", [])[:3]:
            said = refusal.get("reason") or "no reason given"
            print(f"  refused by {refusal['agent_id']}: {said}", file=sys.stderr)


def cmd_task(args: argparse.Namespace) -> int:
    key = api_key(args.key)
    if not key:
        print(f"agentplane: a key is needed: --key or ${KEY_ENV}", file=sys.stderr)
        return 2
    try:
        with Client(args.url, key) as client:
            return _run(client, args)
    except ApiError as exc:
        for line in exc.lines():
            print(line if line.startswith(" ") else f"agentplane: {line}", file=sys.stderr)
        return 1
    except (Unreachable, ServerUrlError) as exc:
        print(f"agentplane: {exc}", file=sys.stderr)
        return 1


def _run(client: Client, args: argparse.Namespace) -> int:
    if args.task_command == "submit":
        try:
            payload = orjson.loads(args.payload)
        except orjson.JSONDecodeError as exc:
            print(f"agentplane: --payload is not JSON: {exc}", file=sys.stderr)
            return 2
        options = {
            key: value
            for key, value in {
                "priority": args.priority,
                "timeout": args.timeout,
                "idempotency_key": args.idempotency_key,
            }.items()
            if value is not None
        }
        task = client.submit(args.type, args.capability, payload, **options)
        if not args.wait:
            _print(task)
            return 0
        task = client.wait(task["id"], on_pending=_Waiting().report)
        _print(
            task["result"]
            if task["status"] == "succeeded"
            else {"status": task["status"], "error": task["error"]}
        )
        return 0 if task["status"] == "succeeded" else 1
    if args.task_command == "get":
        _print(client.get(args.task_id))
    elif args.task_command == "cancel":
        _print(client.cancel(args.task_id))
    else:
        for event in client.events(args.task_id):
            data = event["data"]
            detail = data.get("reason") or (data.get("data") or {}).get("message", "")
            moved = f"{data.get('from') or '':>9} -> {data.get('to') or '':<9}"
            print(f"{data['at']}  {event['event']:<10} {moved} {detail}")
    return 0
