"""API key lifecycle. Services own their transactions."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ApiKey
from app.errors import InvalidInput, NotFound
from app.ownership import PROJECT_PATTERN
from app.security import Scope, display_prefix, generate_secret, hash_secret


async def create_key(
    session: AsyncSession, *, name: str, scopes: list[Scope], project: str | None = None
) -> tuple[ApiKey, str]:
    if project is not None and not re.match(PROJECT_PATTERN, project):
        message = f"project {project!r} is not a valid name ({PROJECT_PATTERN})"
        raise InvalidInput(message, errors=[{"field": "project", "message": message, "type": "value_error"}])
    secret = generate_secret()
    key = ApiKey(
        name=name,
        prefix=display_prefix(secret),
        secret_hash=hash_secret(secret),
        scopes=sorted({scope.value for scope in scopes}),
        project=project,
    )
    session.add(key)
    await session.commit()
    await session.refresh(key)
    return key, secret


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


async def revoke_key(session: AsyncSession, *, key_id: uuid.UUID) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key with id {key_id}")
    if key.revoked_at is None:
        key.revoked_at = func.now()
        await session.commit()
        await session.refresh(key)
    return key


async def ensure_bootstrap_admin(session: AsyncSession, *, admin_key_configured: bool) -> str | None:
    """On a first start with no admin key anywhere, make one; the caller shows the secret once."""
    if admin_key_configured:
        return None
    if await session.scalar(select(func.count()).select_from(ApiKey)):
        return None
    _, secret = await create_key(session, name="bootstrap-admin", scopes=[Scope.ADMIN])
    return secret
