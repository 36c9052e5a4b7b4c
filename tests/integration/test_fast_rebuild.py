"""The fast rebuild (per deal, over worker processes, swapped in at once): it equals what the
follower built, readers see the old read models or the new ones and never a half-built one,
and a rebuild killed before its swap leaves the old ones and can simply be run again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from app.db import asyncpg_dsn
from app.domain import commands as c
from app.domain.decide import Actor
from app.events.store import EventStore
from app.projections import tree_blocks
from app.projections.registry import PROJECTIONS
from app.projections.replay import (
    CHUNK_EVENTS,
    SCRATCH,
    RebuildFailed,
    rebuild_fast,
    stored_blocks,
)
from app.projections.runner import lock_key
from app.projections.step_aside import REBUILD_LOCK, asking_aside
from app.service.deals import CommandContext, DealService
from app.service.simulation import run_workload
from tests.support import caught_up, dealledger, environment, following, read_models, settle

CHECKPOINTS = (
    "SELECT name, position FROM projection_checkpoints WHERE name = ANY($1::text[]) ORDER BY name"
)


async def _built_by_a_follower(store: EventStore, database_url: str, pg: asyncpg.Connection) -> int:
    async with following(database_url, batch_size=40):
        await run_workload(DealService(store), deals=40, commands=900, seed=21, writers=1)
        await run_workload(DealService(store), deals=30, commands=600, seed=22, writers=3)
        await caught_up(pg)
    return int(await pg.fetchval("SELECT count(*) FROM events"))


async def test_the_fast_rebuild_equals_the_follower_for_any_number_of_workers(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    total = await _built_by_a_follower(store, database_url, pg)
    later = datetime.now(UTC) + timedelta(days=20)
    await settle(pg, later)
    incremental = await read_models(pg)
    assert len(incremental["deal_flags"]) > 50 and len(incremental["stage_intervals"]) > 70

    # One worker handing its files over at the end; three, every 50 events (loaded while
    # they fold on: more chunks than the workers' whole share at the default).
    for workers, chunk_events in ((1, CHUNK_EVENTS), (3, 50)):
        done = await rebuild_fast(
            asyncpg_dsn(database_url),
            list(PROJECTIONS.values()),
            workers=workers,
            chunk_events=chunk_events,
        )
        assert done == total
        await settle(pg, later)
        rebuilt = await read_models(pg)
        for table, rows in incremental.items():
            assert rebuilt[table] == rows, (workers, table)
        positions = {r["position"] for r in await pg.fetch(CHECKPOINTS, list(PROJECTIONS))}
        assert positions == {await pg.fetchval("SELECT max(position) FROM events")}


async def test_text_with_tabs_newlines_and_backslashes_comes_through_a_rebuild_unchanged(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    # The rebuild writes COPY text files, where these four characters must be escaped.
    odd = "tab\there, line\nbreak\r\nand a back\\slash \\t \\N"
    service, rep = DealService(store), CommandContext(Actor("rick", "rep"))
    async with following(database_url):
        deal = (await service.open(c.OpenDeal(name=odd, owner="rick"), rep)).state.deal_id
        await service.execute(deal, c.SetNextStep(odd, date(2026, 1, 5)), rep)
        await service.execute(deal, c.RaiseBlocker(uuid4(), "internal_politics", odd), rep)
        await caught_up(pg)
    later = datetime.now(UTC) + timedelta(days=1)
    await settle(pg, later)
    incremental = await read_models(pg)
    assert await pg.fetchval("SELECT name FROM deals WHERE deal_id = $1", deal) == odd

    await rebuild_fast(asyncpg_dsn(database_url), list(PROJECTIONS.values()), workers=1)
    await settle(pg, later)
    assert await read_models(pg) == incremental


async def test_readers_see_the_old_read_models_or_the_new_never_a_half_built_one(
    store: EventStore, database_url: str, pg: asyncpg.Connection, owner_url: str
) -> None:
    await _built_by_a_follower(store, database_url, pg)
    deals = await pg.fetchval("SELECT count(*) FROM deals")
    intervals = await pg.fetchval("SELECT count(*) FROM stage_intervals")
    # Make the old read models recognisably different from what a rebuild writes.
    await pg.execute("UPDATE deals SET name = 'stale'")
    await pg.execute("DELETE FROM stage_intervals WHERE seq > 1")
    stale_intervals = await pg.fetchval("SELECT count(*) FROM stage_intervals")
    assert stale_intervals < intervals

    reader = await asyncpg.connect(asyncpg_dsn(owner_url))
    seen: set[tuple[int, int, int]] = set()
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            # One snapshot over several statements, as a report reading table after table.
            async with reader.transaction(isolation="repeatable_read", readonly=True):
                row = await reader.fetchrow(
                    "SELECT count(*) AS deals, count(*) FILTER (WHERE name = 'stale') AS stale"
                    " FROM deals"
                )
                await asyncio.sleep(0.001)
                intervals = await reader.fetchval("SELECT count(*) FROM stage_intervals")
            seen.add((row["deals"], row["stale"], intervals))

    watching = asyncio.create_task(read())
    try:
        await rebuild_fast(asyncpg_dsn(database_url), list(PROJECTIONS.values()), workers=2)
        await asyncio.sleep(0.05)
    finally:
        done.set()
        await watching
        await reader.close()
    assert seen <= {(deals, deals, stale_intervals), (deals, 0, intervals)}, seen
    assert (deals, 0, intervals) in seen


def _scratch_of(pid: int) -> list[Path]:
    """The files a rebuild run by process `pid` left."""
    return list(Path(tempfile.gettempdir()).glob(f"{SCRATCH}{pid}-*"))


async def test_a_rebuild_killed_before_its_swap_leaves_the_old_read_models_and_reruns(
    store: EventStore, database_url: str, pg: asyncpg.Connection, owner_url: str
) -> None:
    await _built_by_a_follower(store, database_url, pg)
    # Flags compared at one clock: the follower's sweeps judged deals at whatever moments
    # they ran (a loaded machine shifts them), a rebuild at each deal's last event.
    later = datetime.now(UTC) + timedelta(days=20)
    await settle(pg, later)
    expected = await read_models(pg)
    await pg.execute("UPDATE deals SET owner = 'before-the-rebuild'")
    before = await read_models(pg)
    checkpoints = await pg.fetch(CHECKPOINTS, list(PROJECTIONS))

    # Hold the checkpoint rows: the rebuild folds everything, then waits there to swap.
    holder = await asyncpg.connect(asyncpg_dsn(owner_url))
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("SELECT * FROM projection_checkpoints FOR UPDATE")
    rebuild = subprocess.Popen(  # noqa: ASYNC220 - polled without blocking below
        [sys.executable, "-m", "app", "rebuild"],
        env=environment(DATABASE_URL=database_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%projection_checkpoints%' AND pid <> pg_backend_pid()"
        )
        for _ in range(1200):
            if await pg.fetchval(waiting):
                break
            assert rebuild.poll() is None, "the rebuild ended without waiting to swap"
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the rebuild never reached its swap")
        os.killpg(rebuild.pid, signal.SIGKILL)
        rebuild.wait(10)
    finally:
        if rebuild.poll() is None:
            os.killpg(rebuild.pid, signal.SIGKILL)
        await transaction.rollback()
        await holder.close()

    assert await read_models(pg) == before
    assert await pg.fetch(CHECKPOINTS, list(PROJECTIONS)) == checkpoints
    assert _scratch_of(rebuild.pid), "killed, the rebuild could not remove its files"

    rerun = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "rebuild"],
        env=environment(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    await settle(pg, later)
    assert await read_models(pg) == expected
    assert not _scratch_of(rebuild.pid), "the rerun removes what the killed one left"


async def test_a_rebuild_waits_for_no_follower_it_replays_under_one_that_follows(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    async with following(database_url, batch_size=40):
        await run_workload(DealService(store), deals=5, commands=60, seed=3)
        await caught_up(pg)
        # The follower holds the projections' locks: the fast path declines (the caller
        # then has the follower replay them: runner.rebuild).
        assert await rebuild_fast(asyncpg_dsn(database_url), list(PROJECTIONS.values())) is None


async def test_the_fast_rebuild_of_the_tree_refuses_a_log_that_no_longer_has_a_signed_root(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    async with following(database_url, batch_size=40):
        await run_workload(DealService(store), deals=4, commands=40, seed=5)
        await caught_up(pg)
    leaves = await pg.fetchval("SELECT count(*) FROM log_leaves")
    # A checkpoint signed for a root this log does not have (as if events changed since).
    await pg.execute(
        "INSERT INTO log_checkpoints (tree_size, root_hash, note, verifier_key)"
        " VALUES (3, $1, 'forged', 'none')",
        b"\x00" * 32,
    )
    with pytest.raises(RebuildFailed, match="the first 3 events no longer has the root signed"):
        await rebuild_fast(asyncpg_dsn(database_url), [PROJECTIONS["log_tree"]])
    assert await pg.fetchval("SELECT count(*) FROM log_leaves") == leaves
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "rebuild", "log_tree"],
        env=environment(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "no longer has the root signed" in " ".join(result.stderr.split())


async def test_a_rebuild_puts_right_what_differs_in_the_tree_and_leaves_the_rest(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    """The tree's rows are compared with the rebuilt ones, not rewritten: whatever differs
    (a changed leaf, a missing node, a stray one) is put right, the rest stays as it was."""
    async with following(database_url, batch_size=40):
        await run_workload(DealService(store), deals=6, commands=80, seed=8)
        await caught_up(pg)
    before = await read_models(pg)
    tree = before["log_leaves"], before["log_nodes"]
    await pg.execute("UPDATE log_leaves SET event_hash = '\\x00' WHERE leaf_index = 5")
    await pg.execute("DELETE FROM log_nodes WHERE height = 1 AND index = 2")
    await pg.execute("INSERT INTO log_nodes VALUES (30, 0, '\\x01')")
    untouched = await pg.fetchval("SELECT xmin::text FROM log_leaves WHERE leaf_index = 0")

    assert await rebuild_fast(asyncpg_dsn(database_url), [PROJECTIONS["log_tree"]])
    after = await read_models(pg)
    assert (after["log_leaves"], after["log_nodes"]) == tree
    assert await pg.fetchval("SELECT xmin::text FROM log_leaves WHERE leaf_index = 0") == untouched


async def test_the_tree_is_digested_block_by_block_alike_in_sql_and_as_it_is_rebuilt(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    """A rebuild compares the tree by blocks (a digest each, stored ones from SQL, rebuilt
    ones in Python): the two must agree on an unchanged tree, and a changed row must
    change its block's digest, else a rebuild would rewrite every block or miss one."""
    async with following(database_url, batch_size=40):
        await run_workload(DealService(store), deals=5, commands=60, seed=9)
        await caught_up(pg)

    async def sorted_against(stored: dict[tree_blocks.Block, bytes]) -> list[str]:
        written: list[str] = []
        sorter = tree_blocks.BlockSorter(
            stored,
            lambda level, lines: written.extend(lines),
            lambda level, lines: written.extend(lines),
        )
        for r in await pg.fetch("SELECT * FROM log_leaves ORDER BY leaf_index"):
            row = tree_blocks.leaf_bytes(
                r["leaf_index"], r["position"], r["stream_id"], r["version"], r["event_hash"]
            )
            sorter.add(tree_blocks.LEAVES, r["leaf_index"], row, "leaf")
        for r in await pg.fetch("SELECT * FROM log_nodes ORDER BY height, index"):
            node = tree_blocks.node_bytes(r["index"], r["hash"])
            sorter.add(r["height"], r["index"], node, "node")
        reconcile = sorter.finish()
        return [*written, *(f"reconcile {block}" for block in reconcile)]

    stored = await stored_blocks(pg)
    assert {level for level, _ in stored} >= {tree_blocks.LEAVES, 0, 1}
    assert await sorted_against(stored) == []

    await pg.execute("UPDATE log_nodes SET hash = '\\x02' WHERE height = 1 AND index = 0")
    changed = await sorted_against(stored)
    assert "reconcile (1, 0)" in changed and "node" in changed and "leaf" not in changed


async def test_a_following_projector_steps_aside_for_the_rebuild_and_follows_on_after_it(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    """`dealledger rebuild` while `serve` projects: the projector lets go of the projections
    for the fast rebuild (readers see the old read models whole, then the new), and follows
    the log on from where the rebuild left them."""
    async with following(database_url, batch_size=40):
        await run_workload(DealService(store), deals=20, commands=300, seed=31)
        await caught_up(pg)
        deals = await pg.fetchval("SELECT count(*) FROM deals")
        await pg.execute("UPDATE deals SET name = 'stale'")  # what a rebuild rewrites

        rebuild = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "rebuild",
            env=environment(DATABASE_URL=database_url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        seen: set[tuple[int, int]] = set()
        stale = "SELECT count(*), count(*) FILTER (WHERE name = 'stale') FROM deals"
        while rebuild.returncode is None:
            seen.add(tuple(await pg.fetchrow(stale)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rebuild.wait(), 0.01)
        out, err = await rebuild.communicate()
        assert rebuild.returncode == 0, err.decode()
        output = " ".join(out.decode().split() + err.decode().split())
        assert "did not step aside" not in output and "reset it in place" not in output
        assert "asked it to step aside until the rebuild is swapped in" in output
        assert f"deals: {await pg.fetchval('SELECT count(*) FROM events')} events in" in output
        seen.add(tuple(await pg.fetchrow(stale)))
        assert seen <= {(deals, deals), (deals, 0)} and (deals, 0) in seen, seen

        # The projector took up again from the rebuild's checkpoints: later events are
        # projected, none twice.
        await run_workload(DealService(store), deals=5, commands=60, seed=32)
        await caught_up(pg, within=30)
    later = datetime.now(UTC) + timedelta(days=20)
    await settle(pg, later)
    followed = await read_models(pg)
    assert await rebuild_fast(asyncpg_dsn(database_url), list(PROJECTIONS.values()))
    await settle(pg, later)
    assert await read_models(pg) == followed


async def test_a_rebuild_whose_projector_does_not_step_aside_gives_up_and_holds_nobody_back(
    store: EventStore, database_url: str, pg: asyncpg.Connection, owner_url: str
) -> None:
    await run_workload(DealService(store), deals=3, commands=30, seed=33)
    holder = await asyncpg.connect(asyncpg_dsn(owner_url))  # holds the lock, hears nothing
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key("deals"))
        done = await rebuild_fast(
            asyncpg_dsn(database_url), [PROJECTIONS["deals"]], aside_seconds=0.3
        )
        assert done is None
        # Given up: followers that did step aside are not kept waiting.
        assert await pg.fetchval("SELECT pg_try_advisory_lock_shared($1)", REBUILD_LOCK)
        await pg.execute("SELECT pg_advisory_unlock_shared($1)", REBUILD_LOCK)
    finally:
        await holder.close()


async def test_projections_status_names_the_rebuild_the_projector_steps_aside_for(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    env = environment(DATABASE_URL=database_url)
    async with following(database_url):
        await run_workload(DealService(store), deals=2, commands=10, seed=34)
        await caught_up(pg)
        async with asking_aside(asyncpg_dsn(database_url), ["deals"]):
            # The follower of `deals` lets go of its lock (the others keep theirs).
            for _ in range(200):
                if await pg.fetchval("SELECT pg_try_advisory_lock($1)", lock_key("deals")):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the follower of deals did not step aside")
            await pg.execute("SELECT pg_advisory_unlock($1)", lock_key("deals"))
            assert not await pg.fetchval("SELECT pg_try_advisory_lock($1)", lock_key("flags"))
            status = await asyncio.to_thread(dealledger, "projections", "status", env=env)
            assert status.returncode == 0, status.stderr
            assert f"rebuild: dealledger rebuild {socket.gethostname()}:{os.getpid()}" in (
                status.stdout
            )
        after = await asyncio.to_thread(dealledger, "projections", "status", env=env)
        assert "rebuild:" not in after.stdout
        # Let go: the follower takes `deals` up again.
        await run_workload(DealService(store), deals=2, commands=10, seed=35)
        await caught_up(pg, within=30)
