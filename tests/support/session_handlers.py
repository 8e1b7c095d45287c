"""Task handlers the session e2e tests give their agents (`--handler TYPE=tests.support.session_handlers:fn`).

Each agent process learns its own id from AGENT_ID_ENV, set by tests.support.agents.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agentplane.demo import DEMO_PRICE_PER_TOKEN, word_count
from agentplane.sdk import HandlerResult, TaskContext, Usage

AGENT_ID_ENV = "AGENTPLANE_TEST_AGENT_ID"


def vote(ctx: TaskContext) -> dict[str, Any]:
    """payload["answers"][my id], else payload["default"], else my own id (so agents never agree)."""
    me = os.environ[AGENT_ID_ENV]
    answers = ctx.payload.get("answers", {})
    if me in answers:
        return {"answer": answers[me]}
    return {"answer": ctx.payload.get("default", me)}


async def slow_word_count(ctx: TaskContext) -> HandlerResult:
    """The demo word count after payload["delay_ms"] (so a session is still in flight when a test acts)."""
    await asyncio.sleep(int(ctx.payload.get("delay_ms", 200)) / 1000)
    counts = word_count({"lines": ctx.payload["lines"]})
    tokens = sum(len(line.split()) for line in ctx.payload["lines"])
    return HandlerResult(output=counts, usage=Usage(input_tokens=tokens, cost=tokens * DEMO_PRICE_PER_TOKEN))
