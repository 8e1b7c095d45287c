"""The embedded PostgreSQL (the `pgserver` package): a real server, started and reused from a data folder.

Only this module knows how Postgres starts. It speaks over a Unix socket inside the data folder, so it
listens on no TCP port and needs no password.
"""

from __future__ import annotations

import json
import logging
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

# platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then uses /tmp, which is fine.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
logging.getLogger("pgserver").setLevel(logging.WARNING)

DATABASE_NAME = "agentplane"
# pgserver's list of the processes holding the server; the last to let go stops it.
HOLDERS_FILE = ".handle_pids.json"
_MIN_CONNECTIONS = 300


class EmbeddedPostgres:
    """Starts (or joins) the server for ``data_dir``; ``stop()`` releases this process's hold on it."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pgdata").resolve()
        self._server: Any = None

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from pgserver.postgres_server import PostgresServer, get_server

            self.pgdata.mkdir(parents=True, exist_ok=True)
            with PostgresServer._lock:  # pgserver's own lock over its holder list
                _forget_dead_holders(self.pgdata / HOLDERS_FILE)
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        self._ensure_capacity()

    def _ensure_capacity(self) -> None:
        # Several replicas, test servers and benchmark agents share one server; the default 100 is too few.
        current = int(self.psql("SHOW max_connections;").split()[2])
        if current >= _MIN_CONNECTIONS:
            return
        self.psql(f"ALTER SYSTEM SET max_connections = {_MIN_CONNECTIONS};")
        from pgserver._commands import create_command_function

        pg_ctl = create_command_function("pg_ctl")
        pg_ctl(["-w", "restart"], pgdata=self.pgdata, user=self._server.system_user)
        from pgserver.utils import PostmasterInfo

        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata)

    def psql(self, command: str) -> str:
        assert self._server is not None
        return str(self._server.psql(command))

    def socket_dir(self) -> str:
        info = self._server.get_postmaster_info()
        return str(info.socket_dir)

    def create_database(self, name: str = DATABASE_NAME, *, template: str | None = None) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
        if "(1 row)" in exists:
            return
        clause = f" TEMPLATE {template}" if template else ""
        self.psql(f'CREATE DATABASE "{name}"{clause};')

    def url(self, database: str = DATABASE_NAME) -> str:
        return URL.create(
            "postgresql+asyncpg",
            username="postgres",
            database=database,
            query={"host": self.socket_dir()},
        ).render_as_string(hide_password=False)

    def stop(self) -> None:
        if self._server is None:
            return
        try:
            self._server.cleanup()
        except subprocess.CalledProcessError:  # already stopped by another holder
            logger.debug("embedded postgres was already stopped")
        self._server = None


def _forget_dead_holders(path: Path) -> None:
    """Drop the pids of holders that died without letting go (kill -9). pgserver stops the server only when
    the holder leaving is the last on its list, so a dead pid left there would keep every later clean stop
    from stopping it: the server this process adopts would be orphaned."""
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # no list yet, or not one pgserver wrote: leave it to pgserver
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        logger.info("embedded postgres: forgetting holders that died: %s", sorted(set(pids) - set(alive)))
        path.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:  # another user's process: it exists, and may still use the server
        return True
    except psutil.Error:
        return False
