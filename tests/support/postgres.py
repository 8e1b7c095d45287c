"""One PostgreSQL per test run (the embedded one, or TEST_DATABASE_URL), a migrated template, and a fresh
database per test module cloned from it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from app.db.migrate import PROJECT_ROOT, upgrade_to_head

_LOCK_DIR = Path(tempfile.gettempdir()) / f"agentplane-tests-{os.getuid()}"


def _migrations_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "migrations" / "versions").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


@contextmanager
def _file_lock(name: str) -> Iterator[None]:
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with open(_LOCK_DIR / name, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class TestPostgres:
    """Admin access to the server: creates and drops per-module databases."""

    def __init__(self, server_url: str, embedded: object | None = None) -> None:
        self.server_url = make_url(server_url).set(drivername="postgresql+asyncpg")
        self.embedded = embedded
        self.template = f"agentplane_tpl_{_migrations_fingerprint()}"

    def url_for(self, database: str) -> str:
        return self.server_url.set(database=database).render_as_string(hide_password=False)

    def execute_autocommit(self, sql: str) -> list[tuple[object, ...]]:
        import asyncio

        import asyncpg

        url: URL = self.server_url.set(database="postgres")

        async def run() -> list[tuple[object, ...]]:
            conn = await asyncpg.connect(
                user=url.username,
                password=url.password,
                database=url.database,
                host=url.query.get("host") or url.host,
                port=url.port,
            )
            try:
                rows = await conn.fetch(sql)
                return [tuple(row) for row in rows]
            finally:
                await conn.close()

        return asyncio.run(run())

    def ensure_template(self) -> None:
        with _file_lock("template.lock"):
            exists = self.execute_autocommit(f"SELECT 1 FROM pg_database WHERE datname = '{self.template}'")
            if exists:
                return
            building = self.template + "_building"
            self.execute_autocommit(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            self.execute_autocommit(f'CREATE DATABASE "{building}"')
            upgrade_to_head(self.url_for(building))
            self.execute_autocommit(f'ALTER DATABASE "{building}" RENAME TO "{self.template}"')

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        with _file_lock("clone.lock"):  # CREATE DATABASE ... TEMPLATE refuses concurrent use of the template
            self.execute_autocommit(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute_autocommit(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_test_postgres() -> TestPostgres:
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        pg = TestPostgres(external)
    else:
        from app.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(_LOCK_DIR)
        with _file_lock("embedded.lock"):
            embedded.start()
        pg = TestPostgres(embedded.url("postgres"), embedded)
    pg.ensure_template()
    return pg
