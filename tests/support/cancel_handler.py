"""A handler that waits to be cancelled and leaves a mark when it is (run inside an SDK agent process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agentplane.sdk import TaskContext


async def cancellable(ctx: TaskContext) -> dict[str, Any]:
    marker = Path(ctx.payload["marker"])
    await asyncio.to_thread(marker.with_suffix(".started").write_text, ctx.assignment_id.hex)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        # Synchronous on purpose: the handler is being cancelled, so it must not await again.
        marker.write_text(f"cancelled {ctx.assignment_id.hex} cancelled={ctx.cancelled}")  # noqa: ASYNC240
        raise
    return {"finished": True}
