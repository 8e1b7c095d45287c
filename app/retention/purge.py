"""The deletes of a retention sweep: each removes at most one batch of rows, in a statement of its own.

Each statement is its own short transaction (it runs outside BEGIN, on asyncpg directly), so a sweep over a
large backlog never holds locks for long or builds a huge transaction. Rows another transaction holds are
skipped (``SKIP LOCKED``) and taken by a later sweep, so the hot paths never wait on retention. Child rows go
by the foreign keys' ``ON DELETE CASCADE``: a task's events and assignments, a session's events, an agent's
capabilities and health checks.

What is kept, whatever its age:
- a task that is not terminal, and every subtask of a session (those go with their session);
- a running session, and a finished session whose subtasks are not all terminal (none should be: a session
  cancels its open subtasks when it ends; this only guards against deleting work in flight);
- an agent that is not offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.collab.engine import RUNNING
from app.db import raw
from app.tasks.states import TERMINAL

_TERMINAL = sorted(status.value for status in TERMINAL)
_BEFORE = "now() - make_interval(secs => $1)"

# created_at < cutoff is implied by finished_at < cutoff and lets ix_tasks_status_created_at find the rows.
_TASKS = f"""DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks
    WHERE status = ANY($2::text[]) AND session_id IS NULL
        AND created_at < {_BEFORE} AND finished_at < {_BEFORE}
    LIMIT $3 FOR UPDATE SKIP LOCKED
)"""

_SESSION_TASKS = f"""DELETE FROM tasks WHERE id IN (
    SELECT t.id FROM collab_sessions s JOIN tasks t ON t.session_id = s.id
    WHERE s.status <> $2 AND s.finished_at < {_BEFORE} AND t.status = ANY($3::text[])
    LIMIT $4 FOR UPDATE OF t SKIP LOCKED
)"""

_SESSIONS = f"""DELETE FROM collab_sessions WHERE id IN (
    SELECT s.id FROM collab_sessions s
    WHERE s.status <> $2 AND s.finished_at < {_BEFORE}
        AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.session_id = s.id)
    LIMIT $3 FOR UPDATE SKIP LOCKED
)"""

# An agent that reconnects while this runs holds its row: the delete skips it, or (had the delete locked it
# first) the registration inserts the agent afresh.
_AGENTS = f"""DELETE FROM agents WHERE id IN (
    SELECT id FROM agents
    WHERE status = 'offline' AND coalesce(last_seen_at, connected_at, created_at) < {_BEFORE}
    LIMIT $2 FOR UPDATE SKIP LOCKED
)"""


@dataclass
class Swept:
    """Rows deleted by one sweep (children deleted by cascade are not counted)."""

    tasks: int = 0
    sessions: int = 0
    session_tasks: int = 0
    agents: int = 0

    @property
    def total(self) -> int:
        return self.tasks + self.sessions + self.session_tasks + self.agents


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # asyncpg answers "DELETE <n>"


async def _until_done(db: raw.Driver, statement: str, *args: object, batch: int) -> int:
    """Run one batch delete until a batch comes back short."""
    deleted = 0
    while True:
        count = _count(await db.execute(statement, *args, batch))
        deleted += count
        if count < batch:
            return deleted


async def tasks(db: raw.Driver, *, older_than: float, batch: int) -> int:
    """Terminal tasks outside any session, finished more than ``older_than`` seconds ago."""
    return await _until_done(db, _TASKS, older_than, _TERMINAL, batch=batch)


async def sessions(db: raw.Driver, *, older_than: float, batch: int) -> tuple[int, int]:
    """Sessions finished more than ``older_than`` seconds ago: their subtasks first, then the sessions.
    Returns (sessions, subtasks)."""
    subtasks = await _until_done(db, _SESSION_TASKS, older_than, RUNNING, _TERMINAL, batch=batch)
    return await _until_done(db, _SESSIONS, older_than, RUNNING, batch=batch), subtasks


async def agents(db: raw.Driver, *, offline_for: float, batch: int) -> int:
    """Agents offline (by their last sign of life) for more than ``offline_for`` seconds."""
    return await _until_done(db, _AGENTS, offline_for, batch=batch)
