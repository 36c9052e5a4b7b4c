"""Costs as the log grows: GET one deal, a single append and projection lag (p99) on a small
log and on a large one, as a ratio (target: within 1.2x), and the disk used per million
events. `python -m bench --scale 10000000` (the large log is bulk-loaded, then rebuilt)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from app.db import asyncpg_dsn
from bench import scenarios
from bench.common import Row


@dataclass(frozen=True)
class Costs:
    events: int
    read_p99: float
    append_p99: float
    lag_p99: float
    bytes_per_million: float
    read_floor_p99: float
    """The floor route's GET of the same read-model row: how PostgreSQL and the machine
    itself did at this size (the noise a ratio of sub-millisecond p99s carries)."""
    append_floor_p99: float
    """Raw INSERT's p99 (into a table of its own, not the grown log): the machine's state."""
    reads: dict[str, str] = field(default_factory=dict)
    """Per figure: the blocks read from outside PostgreSQL's shared buffers while it was
    measured, and the time each read took (the OS page cache answers in microseconds, the
    disk in milliseconds): whether a large log's figure was cache misses."""


T = TypeVar("T")


async def _blocks_read(url: str) -> tuple[int, float]:
    """`pg_stat_database`'s block reads in this database so far, and the ms they took
    (track_io_timing, set by `_time_reads`)."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await connection.fetchrow(
            "SELECT blks_read, blk_read_time FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
    finally:
        await connection.close()
    return int(row["blks_read"]), float(row["blk_read_time"])


async def _reading(url: str, measured: Awaitable[T]) -> tuple[T, str]:
    """`measured`'s result, and the block reads from outside shared buffers it caused."""
    blocks, ms = await _blocks_read(url)
    result = await measured
    await asyncio.sleep(0.5)  # sessions just closed flush their counts as they exit
    after, after_ms = await _blocks_read(url)
    read, took = after - blocks, after_ms - ms
    return result, f"{read:,} block reads, {took / read if read else 0:.3f} ms each"


async def disk_per_million(url: str) -> tuple[int, float]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        events = int(await connection.fetchval("SELECT count(*) FROM events"))
        size = int(await connection.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await connection.close()
    return events, size / max(events, 1) * 1_000_000


async def costs(url: str, deals: list[uuid.UUID], quick: bool) -> Costs:
    """The three figures on the log as it is (its read models built)."""
    events, per_million = await disk_per_million(url)
    await _time_reads(url)
    seen: dict[str, str] = {}
    read, seen["GET one deal"] = await _reading(url, _read_one_deal(url, deals, quick))
    append, seen["single append"] = await _reading(
        url, scenarios.append(url, 1, 300 if quick else 3000)
    )
    lag, seen["projection lag"] = await _reading(
        url, scenarios.projection_lag(url, 3 if quick else 20)
    )
    return Costs(
        events,
        read.p99_ms or 0.0,
        append.p99_ms or 0.0,
        lag.p99_ms or 0.0,
        per_million,
        read.floor_p99_ms or 0.0,
        append.floor_p99_ms or 0.0,
        seen,
    )


async def _read_one_deal(url: str, deals: list[uuid.UUID], quick: bool) -> Row:
    async with scenarios.servers(url) as (ours, floor):
        return await scenarios.read_one_deal(deals, ours, floor, 300 if quick else 3000)


async def _time_reads(url: str) -> None:
    """track_io_timing on for the sessions opened from now on in this database."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        name = await connection.fetchval("SELECT current_database()")
        await connection.execute(f'ALTER DATABASE "{name}" SET track_io_timing = on')
    finally:
        await connection.close()


def _growth(large: float, small: float) -> str:
    return f"{large:.1f} vs {small:.1f} ms ({large / small:.0%})" if small else "-"


def rows(small: Costs, large: Costs) -> list[Row]:
    out = [
        Row(
            f"cost at {large.events:,} vs {small.events:,} events: {name}",
            big,
            little,
            "p99 ms",
            p99_ms=big,
            floor_p99_ms=little,
            target="≤ 1.2x (ratio ≤ 120%)",
            note="floor column: the same figure on the small log"
            + beside
            + f"; outside shared buffers: {large.reads.get(name, '-')} (small log:"
            f" {small.reads.get(name, '-')})",
        )
        for name, big, little, beside in (
            (
                "GET one deal",
                large.read_p99,
                small.read_p99,
                "; the floor route's GET of the same row, p99 "
                + _growth(large.read_floor_p99, small.read_floor_p99),
            ),
            (
                "single append",
                large.append_p99,
                small.append_p99,
                "; raw INSERT into its own table in the same rounds, p99 "
                + _growth(large.append_floor_p99, small.append_floor_p99),
            ),
            ("projection lag", large.lag_p99, small.lag_p99, ""),
        )
    ]
    out.append(
        Row(
            f"disk per million events, at {large.events:,}",
            large.bytes_per_million / 2**30,
            small.bytes_per_million / 2**30,
            "GiB",
            note="pg_database_size / events (log, read models, indexes); floor column: small log",
        )
    )
    return out
