"""The Annotated dependencies every router shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import Forbidden, Unauthorized
from app.metrics import Metrics
from app.security import KeyCache, Principal, Scope, authenticate, known_principal
from app.signals import Signals


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def` dependency in its
# thread pool, and those hand-offs were a third of a task submission's CPU.
async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return maker


async def get_session(
    maker: Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)],
) -> AsyncIterator[AsyncSession]:
    async with maker() as session:
        yield session


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_signals(request: Request) -> Signals:
    signals: Signals = request.app.state.runtime.signals
    return signals


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
SignalsDep = Annotated[Signals, Depends(get_signals)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_bearer = HTTPBearer(auto_error=False, description="An Agentplane API key")


def require_scope(*scopes: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits a key holding any of ``scopes`` (admin holds them all)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        if credentials is None:
            raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
        settings: Settings = request.app.state.settings
        cache: KeyCache = request.app.state.key_cache
        admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
        secret = credentials.credentials
        # Most requests come with a key seen in the last seconds: no session is opened for those.
        principal = known_principal(secret, admin_key=admin_key, cache=cache)
        if principal is None:
            maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
            async with maker() as session:
                principal = await authenticate(session, secret, admin_key=admin_key, cache=cache)
        if principal is None:
            raise Unauthorized("the API key is not valid or has been revoked")
        if not principal.has_any(*scopes):
            wanted = " or ".join(scope.value for scope in scopes)
            raise Forbidden(f"this key lacks the scope this route needs ({wanted})")
        return principal

    return dependency


AdminDep = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]
ClientDep = Annotated[Principal, Depends(require_scope(Scope.CLIENT))]
ReaderDep = Annotated[Principal, Depends(require_scope(Scope.CLIENT, Scope.AGENT))]
