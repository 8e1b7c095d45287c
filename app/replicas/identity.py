"""One live process per replica id, enforced by PostgreSQL.

A second process started with the id of a live replica (the same `host:port`, or an explicit
AGENTPLANE_REPLICA_ID) would otherwise "recover its previous incarnation": mark the live replica's agents
offline and requeue the leases they are running. A session-level advisory lock, held on a dedicated
connection for the life of the process, makes the second one refuse to start before it touches any state.
"""

from __future__ import annotations

import contextlib
import logging

import asyncpg

logger = logging.getLogger(__name__)

_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"


class ReplicaIdInUse(RuntimeError):
    def __init__(self, replica_id: str) -> None:
        super().__init__(
            f"replica id {replica_id!r} is in use by a live process; stop it, or give this one another id "
            "(AGENTPLANE_REPLICA_ID or another port)"
        )
        self.replica_id = replica_id


def lock_key(replica_id: str) -> str:
    return f"agentplane.replica:{replica_id}"


class ReplicaIdentity:
    def __init__(self, dsn: str, replica_id: str) -> None:
        self.dsn = dsn
        self.replica_id = replica_id
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> None:
        """Hold the replica id's lock, or raise ReplicaIdInUse."""
        conn = await asyncpg.connect(self.dsn)
        try:
            held = await conn.fetchval(_TRY_LOCK, lock_key(self.replica_id))
        except BaseException:
            await conn.close()
            raise
        if not held:
            await conn.close()
            raise ReplicaIdInUse(self.replica_id)
        self._conn = conn

    async def ensure(self) -> bool:
        """Called on every heartbeat: if the lock's connection was lost (a database restart), take the lock
        again. False when it cannot be had: another process holds this id now."""
        if self._conn is not None and not self._conn.is_closed():
            return True
        self._conn = None
        try:
            await self.acquire()
        except ReplicaIdInUse:
            logger.error("replica id %r was taken by another process", self.replica_id)
            return False
        return True

    async def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None


async def is_in_use(dsn: str, replica_id: str) -> bool:
    """A look before starting (the CLI's one-line refusal): True when a live process holds the id."""
    identity = ReplicaIdentity(dsn, replica_id)
    try:
        await identity.acquire()
    except ReplicaIdInUse:
        return True
    await identity.release()
    return False
