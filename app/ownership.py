"""Who owns a task or a session, and which of them a key may see.

A task or session records the API key that created it (``owner_key_id``) and that key's ``project``; a
session's subtasks record the session's. The rule, in one place:

- admin keys (and the environment's admin key) see everything;
- a key with a project sees the rows of its project, whichever of the project's keys created them;
- a key without a project sees the rows it created;
- rows without an owner (created before ownership, or with the environment's admin key) are seen by admins
  only.

A row another key may not see is answered as if it did not exist (404, never 403), so ids reveal nothing.
The same owner scopes idempotency keys: the project when the key has one, else the key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, false, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.security import Principal, Scope

Row = TypeVar("Row")

# A project is a name an admin gives keys: no spaces, no control characters, nothing that needs escaping.
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$"


@dataclass(frozen=True, slots=True)
class Owner:
    """What a new task or session records about who created it."""

    key_id: uuid.UUID | None
    project: str | None

    @classmethod
    def of(cls, principal: Principal) -> Owner:
        return cls(key_id=principal.key_id, project=principal.project)


NOBODY = Owner(key_id=None, project=None)  # internal work and the env admin key: admins only


def sees_everything(viewer: Principal) -> bool:
    return Scope.ADMIN in viewer.scopes


def visible_to(viewer: Principal, model: Any) -> ColumnElement[bool] | None:
    """The WHERE clause limiting ``model`` (Task or CollabSession) to what ``viewer`` may see; None for all.

    Written so the planner can use the partial indexes on tasks (a project's rows, or a key's own rows
    outside any project)."""
    if sees_everything(viewer):
        return None
    if viewer.project is not None:
        clause: ColumnElement[bool] = model.project == viewer.project
        return clause
    if viewer.key_id is None:  # only the env admin key has no id, and it is admin: nothing to see here
        return false()
    return and_(model.project.is_(None), model.owner_key_id == viewer.key_id)


async def find_visible(
    session: AsyncSession, model: type[Row], row_id: uuid.UUID, *, viewer: Principal, lock: bool = False
) -> Row | None:
    """The task or session ``row_id`` if ``viewer`` may see it (locked FOR UPDATE with ``lock``), else None:
    the caller answers both cases with the same 404."""
    query = select(model).where(model.id == row_id)  # type: ignore[attr-defined]
    if (visible := visible_to(viewer, model)) is not None:
        query = query.where(visible)
    if lock:
        query = query.with_for_update()
    row: Row | None = await session.scalar(query.execution_options(populate_existing=True))
    return row
