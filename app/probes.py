"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import current_revision, head_revision
from app.db.outage import OUTAGES, is_outage
from app.errors import NotReady

router = APIRouter(tags=["probes"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    engine: AsyncEngine = request.app.state.engine
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        revision = await current_revision(engine)
    except Exception as exc:
        if is_outage(exc):
            OUTAGES.failed(exc)
        raise NotReady(f"database unreachable: {exc.__class__.__name__}") from None
    OUTAGES.succeeded()
    head = head_revision()
    if revision != head:
        raise NotReady(f"database schema at {revision}, migrations head is {head}")
    return {"status": "ready", "revision": revision or ""}
