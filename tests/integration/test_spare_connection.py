"""A request that holds a pooled connection takes a second one for queries side by side only
while the pool has connections to spare; else it runs them one after the other on its own,
with the same answers (requests each waiting for a second connection while holding their
first could otherwise hold every connection there is)."""

from __future__ import annotations

import contextlib

import asyncpg

from app.db import create_engine, driver_connection, side_by_side, spare_connection


async def test_a_second_connection_only_while_the_pool_has_some_to_spare(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=2)
    try:

        async def backend(connection: asyncpg.Connection) -> int:
            return int(await connection.fetchval("SELECT pg_backend_pid()"))

        async with driver_connection(engine) as mine:
            own = await backend(mine)
            apart = await side_by_side(mine, lambda: spare_connection(engine), backend, backend)
            assert apart[0] == own and apart[1] != own
            async with contextlib.AsyncExitStack() as held:
                await held.enter_async_context(driver_connection(engine))  # the pool's size
                async with spare_connection(engine) as spare:
                    assert spare is None
                alone = await side_by_side(mine, lambda: spare_connection(engine), backend, backend)
                assert alone == (own, own)
    finally:
        await engine.dispose()
