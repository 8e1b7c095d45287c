"""`agentplane agent`: run an agent process, with your own handlers or the built-in demo ones."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentplane._sdk_logs import configure_logging
from agentplane.client import api_key
from agentplane.sdk import Agent, AgentRejected, Handler
from agentplane.urls import DEFAULT_URL, KEY_ENV, URL_ENV, agent_urls

logger = logging.getLogger("agentplane.agent")


class HandlerSpecError(ValueError):
    pass


def add_parser(subparsers: Any) -> None:
    agent = subparsers.add_parser(
        "agent",
        help="run an agent that connects to a server and serves tasks",
        description="Connect to /ws/agents, register, and run handlers until Ctrl-C. The first Ctrl-C "
        "finishes the tasks in hand (taking no new ones), a second one stops at once.",
    )
    agent.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help=f"a server: http(s)://host:port or its ws(s):// agent endpoint; repeat it or separate with "
        f"commas for failover, tried in order (default ${URL_ENV}, else {DEFAULT_URL})",
    )
    agent.add_argument("--key", help=f"an API key with the agent scope (default: ${KEY_ENV})")
    agent.add_argument(
        "--model", help="the model this agent runs (required unless --demo; demo default demo-1)"
    )
    agent.add_argument(
        "--capability",
        action="append",
        default=[],
        metavar="NAME",
        help="a capability to advertise (repeatable; default: one per handled task type)",
    )
    agent.add_argument("--agent-id", help="a stable id to register under (default: the server assigns one)")
    agent.add_argument("--name", help="a display name")
    agent.add_argument("--max-concurrency", type=int, default=4, help="tasks run at once (default 4)")
    agent.add_argument(
        "--handler",
        action="append",
        default=[],
        metavar="TYPE=module:function",
        help="serve task type TYPE with a sync or async function (repeatable)",
    )
    agent.add_argument(
        "--demo", action="store_true", help="serve the built-in demo handlers (agentplane.demo)"
    )
    agent.add_argument(
        "--spec",
        metavar="FILE",
        help="run the model-backed agents a YAML file declares (docs/agents.md, examples/agents.yaml)",
    )
    agent.add_argument(
        "--drain-timeout", type=float, default=60.0, help="seconds the first Ctrl-C waits for tasks in hand"
    )
    agent.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    agent.set_defaults(func=cmd_agent)


def load_handler(spec: str) -> tuple[str, Handler]:
    """`TYPE=module:function` (the function may be dotted: `module:Class.method`) -> (TYPE, callable)."""
    task_type, sep, target = spec.partition("=")
    module_name, colon, attribute = target.partition(":")
    if not (sep and colon and task_type.strip() and module_name and attribute):
        raise HandlerSpecError(f"--handler {spec!r}: expected TYPE=module:function")
    try:
        value: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time error is the user's module, reported on one line
        raise HandlerSpecError(f"--handler {spec!r}: cannot import {module_name}: {exc!r}") from exc
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise HandlerSpecError(f"--handler {spec!r}: {module_name} has no attribute {attribute}")
        value = getattr(value, part)
    if not callable(value):
        raise HandlerSpecError(f"--handler {spec!r}: {attribute} is not callable")
    handler: Handler = value
    return task_type.strip(), handler


def build_agents(args: argparse.Namespace, key: str) -> list[Agent]:
    if not args.spec:
        return [build_agent(args, key)]
    if args.demo or args.handler or args.model:
        raise HandlerSpecError("--spec declares its agents: give it without --demo, --handler or --model")
    from agentplane.providers.spec import build_agents as from_spec
    from agentplane.providers.spec import load_spec

    path = Path(args.spec)
    return from_spec(load_spec(path), path, args.url or None, key)


def build_agent(args: argparse.Namespace, key: str) -> Agent:
    urls = agent_urls(args.url)  # a bad one is a ValueError naming it
    handlers = [load_handler(spec) for spec in args.handler]
    capabilities = args.capability or None  # None: one per handled task type
    if args.demo:
        from agentplane.demo import DEMO_AGENT_NAME, build_demo_agent

        agent = build_demo_agent(
            urls,
            key,
            model=args.model or "demo-1",
            agent_id=args.agent_id,
            max_concurrency=args.max_concurrency,
            capabilities=capabilities,
            name=args.name or DEMO_AGENT_NAME,
        )
    elif not handlers:
        raise HandlerSpecError("give --demo or at least one --handler TYPE=module:function")
    elif not args.model:
        raise HandlerSpecError("--model is required (unless --demo)")
    else:
        agent = Agent(
            urls,
            key,
            args.model,
            capabilities,
            max_concurrency=args.max_concurrency,
            agent_id=args.agent_id,
            name=args.name,
        )
    for task_type, handler in handlers:
        agent.add_handler(task_type, handler)
    return agent


async def serve(agents: Agent | Sequence[Agent], drain_timeout: float) -> None:
    """Run until the agents stop; SIGINT/SIGTERM drain first (bounded), a second one stops at once."""
    fleet = [agents] if isinstance(agents, Agent) else list(agents)
    loop = asyncio.get_running_loop()
    shutdown: list[asyncio.Task[Any]] = []

    async def drain_then_stop() -> None:
        print("agentplane: finishing tasks in hand; Ctrl-C again to stop now", file=sys.stderr, flush=True)
        try:
            async with asyncio.timeout(drain_timeout):
                await asyncio.gather(*(agent.drain() for agent in fleet))
        except TimeoutError:
            logger.warning("tasks still running after %.0f s; stopping anyway", drain_timeout)
        await stop_all()

    async def stop_all() -> None:
        await asyncio.gather(*(agent.stop() for agent in fleet))

    def on_signal() -> None:
        if not shutdown:
            shutdown.append(asyncio.create_task(drain_then_stop()))
        else:
            shutdown.append(asyncio.create_task(stop_all()))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        # One agent refused for good (AgentRejected) ends the process: the others are stopped below.
        await asyncio.gather(*(agent.run() for agent in fleet))
    finally:
        await stop_all()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in shutdown:
            task.cancel()
        await asyncio.gather(*shutdown, return_exceptions=True)


def cmd_agent(args: argparse.Namespace) -> int:
    key = api_key(args.key)
    if not key:
        print(f"agentplane: an agent key is required: --key or ${KEY_ENV}", file=sys.stderr)
        return 2

    if args.max_concurrency < 1:
        print("agentplane: --max-concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        agents = build_agents(args, key)
    except HandlerSpecError as exc:
        print(f"agentplane: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # a capability, id or model the protocol would refuse
        error = exc.errors(include_url=False)[0]
        print(
            f"agentplane: invalid {error['loc'][-1] if error['loc'] else 'value'} "
            f"{error['input']!r}: {error['msg']}",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:
        print(f"agentplane: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        asyncio.run(serve(agents, args.drain_timeout))
    except AgentRejected as exc:
        print(f"agentplane: {exc}", file=sys.stderr)
        return 1
    return 0
