"""API keys: generation, hashing, lookup, scopes. A key's secret is shown once and stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ApiKey

KEY_PREFIX = "ap_"


class Scope(StrEnum):
    ADMIN = "admin"
    CLIENT = "client"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: uuid.UUID | None  # None for the AGENTPLANE_ADMIN_KEY from the environment
    name: str
    scopes: frozenset[str]
    # Keys of one project share their tasks and sessions (app.ownership). Cached with the key, so recording
    # and checking ownership costs no query.
    project: str | None = None

    def has_any(self, *scopes: Scope) -> bool:
        return Scope.ADMIN in self.scopes or any(scope in self.scopes for scope in scopes)


ENV_ADMIN = Principal(key_id=None, name="env-admin", scopes=frozenset(Scope))


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random strings, so a fast hash is enough (no dictionary to guard against).
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:10]


class KeyCache:
    """Caches lookups briefly so hot paths don't query per request; revocation lags by ``ttl``.

    Unknown secrets are cached too (negatively, for the same ``ttl``), so a client repeating a bad token costs
    no query after its first: a new key cannot be in it, since its secret was never seen before it existed.
    Each table is bounded (cleared when full)."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._unknown: dict[str, float] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if len(self._entries) > self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl, principal)
        self._unknown.pop(digest, None)

    def is_unknown(self, digest: str) -> bool:
        """True when ``digest`` matched no live key within the last ``ttl`` seconds."""
        expires = self._unknown.get(digest)
        return expires is not None and expires >= time.monotonic()

    def put_unknown(self, digest: str) -> None:
        if len(self._unknown) > self.MAX_ENTRIES:
            self._unknown.clear()
        self._unknown[digest] = time.monotonic() + self.ttl

    def clear(self) -> None:
        self._entries.clear()
        self._unknown.clear()


def known_principal(secret: str, *, admin_key: str | None, cache: KeyCache | None) -> Principal | None:
    """The principal of ``secret`` when it is the environment's admin key or cached; no database needed."""
    if admin_key and hmac.compare_digest(secret.encode(), admin_key.encode()):
        return ENV_ADMIN
    return cache.get(hash_secret(secret)) if cache is not None else None


async def authenticate(
    session: AsyncSession, secret: str, *, admin_key: str | None, cache: KeyCache | None = None
) -> Principal | None:
    if not secret:
        return None
    if (known := known_principal(secret, admin_key=admin_key, cache=cache)) is not None:
        return known
    digest = hash_secret(secret)
    if cache is not None and cache.is_unknown(digest):
        return None
    row = await session.scalar(
        select(ApiKey).where(ApiKey.secret_hash == digest, ApiKey.revoked_at.is_(None))
    )
    if row is None:
        if cache is not None:
            cache.put_unknown(digest)
        return None
    principal = Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes), project=row.project)
    if cache is not None:
        cache.put(digest, principal)
    return principal


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
