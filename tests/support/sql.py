"""Direct SQL against a test database: set up a state (a trigger, a counter near its limit) or read one."""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.engine import make_url


async def connect(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    return await asyncpg.connect(
        user=url.username,
        password=url.password,
        database=url.database,
        host=url.query.get("host") or url.host,
        port=url.port,
    )


async def execute(database_url: str, statement: str, *args: Any) -> str:
    connection = await connect(database_url)
    try:
        return str(await connection.execute(statement, *args))
    finally:
        await connection.close()


async def fetchval(database_url: str, query: str, *args: Any) -> Any:
    connection = await connect(database_url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()
