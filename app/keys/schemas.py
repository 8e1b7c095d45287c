from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

from app.ownership import PROJECT_PATTERN
from app.request_model import RequestModel
from app.security import Principal, Scope
from app.storable import StorableText


class KeyCreate(RequestModel):
    name: StorableText = Field(min_length=1, max_length=100)
    # Strict(False): a scope is its name, a JSON string (strict mode would want the Python enum itself).
    scopes: list[Annotated[Scope, Strict(False)]] = Field(min_length=1, max_length=3)
    project: str | None = Field(
        default=None,
        pattern=PROJECT_PATTERN,
        description="Keys of one project see (and cancel) each other's tasks and sessions.",
    )


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    project: str | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    secret: str = Field(description="Shown once; only its hash is stored.")


class KeyList(BaseModel):
    items: list[KeyOut]


class KeySelf(BaseModel):
    """The key a request came with, as far as its holder may know it: what it may do, never its secret."""

    id: uuid.UUID | None = Field(description="None for the environment's admin key (AGENTPLANE_ADMIN_KEY).")
    name: str
    scopes: list[str]
    project: str | None

    @classmethod
    def of(cls, principal: Principal) -> KeySelf:
        return cls(
            id=principal.key_id,
            name=principal.name,
            scopes=sorted(principal.scopes),
            project=principal.project,
        )
