from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import TestPostgres, start_test_postgres
from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def postgres() -> Iterator[TestPostgres]:
    pg = start_test_postgres()
    yield pg
    embedded = pg.embedded
    if embedded is not None:
        embedded.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def database_url(postgres: TestPostgres) -> Iterator[str]:
    name = postgres.create_database()
    yield postgres.url_for(name)
    postgres.drop_database(name)


@pytest.fixture
def fresh_database_url(postgres: TestPostgres) -> Iterator[str]:
    name = postgres.create_database()
    yield postgres.url_for(name)
    postgres.drop_database(name)


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real server process per test module; a module sets SERVER_ENV for its own settings."""
    env = dict(getattr(request.module, "SERVER_ENV", {}))
    proc = ServerProcess(database_url, env=env, log_dir=tmp_path_factory.mktemp("logs"))
    proc.start()
    yield proc
    proc.stop()
