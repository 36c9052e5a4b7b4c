"""A running projector steps aside for a fast rebuild, and takes up again after it.

The fast rebuild (replay.py) needs each projection's lock, which the elected projector holds
while it follows the log. Without this the rebuild could only reset the projections in place
and watch the projector replay them, batch by batch, while readers saw half-built tables.

The rebuild takes REBUILD_LOCK and asks on CHANNEL (a NOTIFY naming the projections); each
follower of one of them lets go of its projection's lock and waits for a shared hold of
REBUILD_LOCK, which it gets once the rebuild has swapped its read models in (or ended any
other way: its session's end releases the lock), then follows on from the checkpoints the
rebuild set. Readers meanwhile read the old read models, whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg

from app.db import SESSION_SETTINGS, close_quickly

CHANNEL = "rebuild"
REBUILD_APP = "dealledger rebuild"
REBUILD_LOCK = int.from_bytes(
    hashlib.sha256(b"dealledger:rebuild-asks-aside").digest()[:8], "big", signed=True
)


def asked(payload: str) -> set[str]:
    """The projection names a notification on CHANNEL asks to step aside."""
    return {name for name in payload.split(",") if name}


async def wait_out_rebuild(dsn: str) -> None:
    """Return once no rebuild holds REBUILD_LOCK (at once if none does)."""
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    try:
        await connection.execute("SELECT pg_advisory_lock_shared($1)", REBUILD_LOCK)
    finally:
        await close_quickly(connection)  # the shared hold goes with the session


@contextlib.asynccontextmanager
async def asking_aside(
    dsn: str, names: Sequence[str]
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold REBUILD_LOCK while the block runs and ask the followers of `names` to step aside;
    yields a function that asks again (a follower that took its lock after the first ask)."""
    me = f"{REBUILD_APP} {socket.gethostname()}:{os.getpid()}"  # `projections status` shows it
    connection = await asyncpg.connect(
        dsn, server_settings={**SESSION_SETTINGS, "application_name": me[:63]}
    )
    try:
        # Waits for followers still waiting out an earlier rebuild to have got their hold.
        await connection.execute("SELECT pg_advisory_lock($1)", REBUILD_LOCK)

        async def ask() -> None:
            await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, ",".join(names))

        await ask()
        yield ask
    finally:
        await close_quickly(connection)
