"""The verifiable log's costs: appends with the sequencer following against appends without
it, and inclusion proofs (O(log n) stored subtrees) against one indexed lookup, at a size."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time

import asyncpg

from app.db import asyncpg_dsn, create_engine
from app.events import merkle
from app.events.notes import Signer
from app.events.store import EventStore
from app.projections.log_tree import LogTree, computed, tree_size
from app.projections.runner import ProjectionRunner, wait_for_position
from app.service.deals import DealService
from app.service.heads import HeadCache
from bench.common import Latencies, Row, concurrently, median_round
from bench.scenarios import AS_REP, activity, open_deals


async def _caught_up(url: str, tree: LogTree) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        head = await connection.fetchval("SELECT max(position) FROM events")
        if head is not None:
            await wait_for_position(connection, head, [tree.name], within_seconds=600)
    finally:
        await connection.close()


async def _appends(url: str, commands: int) -> Latencies:
    engine = create_engine(url, pool_size=2)
    service = DealService(EventStore(engine), heads=HeadCache())
    deals = await open_deals(service, max(1, commands // 20))

    async def one(_: int, i: int) -> None:
        await service.execute(deals[i % len(deals)], activity(), AS_REP)

    try:
        return await concurrently(1, commands, one)
    finally:
        await engine.dispose()


async def _with_sequencer(url: str, commands: int) -> Latencies:
    tree = LogTree(Signer.generate("bench.example/log"), every_events=1000)
    runner = ProjectionRunner(asyncpg_dsn(url), [tree], poll_interval=0.05)
    task = asyncio.create_task(runner.run())
    try:
        await _caught_up(url, tree)  # what earlier scenarios wrote, before timing
        return await _appends(url, commands)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def append_with_sequencer(url: str, commands: int, rounds: int = 3) -> Row:
    """The floor is the same appends with no sequencer; ours has it following (and signing
    every 1,000 events), in this process, as `serve` runs it. Rounds alternate, and the
    median round of each counts, so a noisy neighbour does not decide the ratio."""
    without, with_it = [], []
    for _ in range(rounds):
        without.append(await _appends(url, commands))
        with_it.append(await _with_sequencer(url, commands))
    mine, floor = median_round(with_it), median_round(without)
    return Row(
        "append with the log sequencer following, 1 writer",
        mine.rate,
        floor.rate,
        "events/s",
        mine.percentile(0.5),
        mine.percentile(0.99),
        floor.percentile(0.99),
        target="≥ 90% of the same appends without it",
        note=f"floor = the same appends, no sequencer; median of {rounds} alternating rounds",
    )


async def inclusion_proofs(url: str, proofs: int) -> Row:
    """Proofs for random leaves of the whole tree, read from the stored subtrees in one
    query each; the floor is one primary-key lookup of a stored node."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        size = await tree_size(connection)
        mine, floor = Latencies(), Latencies()
        started = time.perf_counter()
        for _ in range(proofs):
            index = random.randrange(size)
            began = time.perf_counter()
            await computed(connection, functools.partial(merkle.inclusion_path, index, size))
            mine.samples.append(time.perf_counter() - began)
        mine.wall = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(proofs):
            began = time.perf_counter()
            await connection.fetchval(
                "SELECT hash FROM log_nodes WHERE height = 0 AND index = $1",
                random.randrange(size),
            )
            floor.samples.append(time.perf_counter() - began)
        floor.wall = time.perf_counter() - started
    finally:
        await connection.close()
    return Row(
        f"inclusion proof from the stored tree, {size:,} leaves",
        mine.rate,
        floor.rate,
        "proofs/s",
        mine.percentile(0.5),
        mine.percentile(0.99),
        floor.percentile(0.99),
        target="O(log n): flat between sizes",
        note=f"{size.bit_length()} hashes per proof at most; floor = one node lookup",
    )
