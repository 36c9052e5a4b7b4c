"""Projections against the real log: rebuild equals incremental, nothing skipped, crash-safe."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from app.db import asyncpg_dsn
from app.events.store import EventStore
from app.projections.registry import PROJECTIONS
from app.projections.runner import rebuild, rebuild_together
from app.service.deals import DealService
from app.service.simulation import run_workload
from tests.support import (
    caught_up,
    environment,
    event_counts,
    following,
    head,
    read_models,
    settle,
)

# The read models' checkpoints (the webhook outbox that `project` also runs keeps its own).
READ_MODEL_CHECKPOINTS = (
    "SELECT name, position FROM projection_checkpoints WHERE name = ANY($1::text[])"
)


async def rebuild_all(database_url: str, batch_size: int = 997) -> dict[str, int]:
    return {
        name: await rebuild(asyncpg_dsn(database_url), projection, batch_size=batch_size)
        for name, projection in PROJECTIONS.items()
    }


async def test_rebuild_equals_what_was_built_incrementally(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    async with following(database_url, batch_size=50):
        # One writer first: which deals get which commands is then fixed by the seed, so
        # the variety asserted below does not hang on how racing writers interleave...
        varied = await run_workload(DealService(store), deals=60, commands=1500, seed=7, writers=1)
        # ...then writers racing on the same kind of pipeline, while the projections follow.
        raced = await run_workload(DealService(store), deals=60, commands=1500, seed=8, writers=4)
        await caught_up(pg)
    # A month on, time alone has raised flags on many of these deals.
    later = datetime.now(UTC) + timedelta(days=30)
    await settle(pg, later)
    incremental = await read_models(pg)
    flagged = await pg.fetch("SELECT DISTINCT kind FROM deal_flags")
    assert {"slow_in_stage", "inactive", "close_date_passed"} <= {r["kind"] for r in flagged}

    # The workload did what the claim is about: regressions, nurture, disqualifications...
    kinds = await event_counts(pg)
    for kind in (
        "StageAdvanced",
        "StageRegressed",
        "DealNurtured",
        "DealReactivated",
        "DealDisqualified",
        "DealWon",
        "EvidenceRetracted",
    ):
        assert kinds.get(kind, 0) > 0, f"workload produced no {kind}: {kinds}"
    total = sum(kinds.values())
    assert total == varied.events + raced.events > 2500
    assert len(incremental["deals"]) == 120

    applied = await rebuild_all(database_url)
    assert applied == dict.fromkeys(PROJECTIONS, total)
    await settle(pg, later)
    rebuilt = await read_models(pg)
    for table, rows in incremental.items():
        assert rebuilt[table] == rows, table

    # All projections in one pass over the log (what `dealledger rebuild` does) agree too.
    together = await rebuild_together(
        asyncpg_dsn(database_url), list(PROJECTIONS.values()), batch_size=997
    )
    assert together == total
    await settle(pg, later)
    rebuilt = await read_models(pg)
    for table, rows in incremental.items():
        assert rebuilt[table] == rows, table


async def test_no_event_is_skipped_while_8_writers_race(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    async with following(database_url, batch_size=20):
        await run_workload(DealService(store), deals=40, commands=1200, seed=11, writers=8)
        await caught_up(pg)
        mismatched = await pg.fetch(
            "SELECT s.stream_id, s.version, d.version AS projected"
            " FROM (SELECT stream_id, max(version) AS version FROM events GROUP BY stream_id) s"
            " LEFT JOIN deals d ON d.deal_id = s.stream_id"
            " WHERE d.version IS DISTINCT FROM s.version"
        )
        assert [tuple(r) for r in mismatched] == []
        # Every event was counted once by the activity projection, too.
        buyer = await pg.fetchval(
            "SELECT count(*) FROM events WHERE type = 'BuyerActivityRecorded'"
        )
        assert await pg.fetchval("SELECT sum(buyer_activity_count) FROM deal_activity") == buyer


async def test_killed_projector_resumes_from_its_checkpoint_and_matches_a_rebuild(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    await run_workload(DealService(store), deals=100, commands=1500, seed=3)
    last = await head(pg)
    projector = subprocess.Popen(  # noqa: ASYNC220 - we poll it without blocking
        [sys.executable, "-m", "app", "project"],
        env=environment(DATABASE_URL=database_url, DEALLEDGER_PROJECTION_BATCH_SIZE="2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            positions = await pg.fetch(READ_MODEL_CHECKPOINTS, list(PROJECTIONS))
            if len(positions) == len(PROJECTIONS) and all(
                r["position"] > last // 4 for r in positions
            ):
                break
            assert projector.poll() is None, projector.stderr and projector.stderr.read()
            await asyncio.sleep(0.01)
        projector.send_signal(signal.SIGKILL)
        projector.wait(10)
    finally:
        if projector.poll() is None:
            projector.kill()
    at_kill = {
        r["name"]: r["position"] for r in await pg.fetch(READ_MODEL_CHECKPOINTS, list(PROJECTIONS))
    }
    assert any(0 < position < last for position in at_kill.values()), at_kill

    async with following(database_url):
        await caught_up(pg)
    now = datetime.now(UTC)
    await settle(pg, now)
    resumed = await read_models(pg)
    await rebuild_all(database_url)
    await settle(pg, now)
    assert await read_models(pg) == resumed


async def test_rebuild_while_a_projector_follows_is_replayed_by_that_projector(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    service = DealService(store)
    async with following(database_url, batch_size=25):
        await run_workload(service, deals=30, commands=400, seed=5)
        await caught_up(pg)
        before = (await read_models(pg))["deals"]
        total = await pg.fetchval("SELECT count(*) FROM events")
        # The follower holds every projection's lock: rebuild resets and watches, not waits.
        done = await asyncio.wait_for(
            rebuild(asyncpg_dsn(database_url), PROJECTIONS["deals"], poll_interval=0.02), 30
        )
        assert done == total
        assert (await read_models(pg))["deals"] == before


async def test_rebuild_of_one_during_a_rebuild_of_all_is_finished_by_it(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    await run_workload(DealService(store), deals=30, commands=600, seed=9)
    total = await pg.fetchval("SELECT count(*) FROM events")
    dsn = asyncpg_dsn(database_url)
    everything = asyncio.create_task(
        rebuild_together(dsn, list(PROJECTIONS.values()), batch_size=10)
    )
    started = "SELECT position FROM projection_checkpoints WHERE name = 'deals'"
    while await pg.fetchval(started) in (None, 0):  # noqa: ASYNC110 (polling the database)
        await asyncio.sleep(0.005)
    assert not everything.done(), "the one-pass rebuild ended before the test could interfere"
    # Locks are held by the one-pass rebuild: this resets `deals` and waits for it.
    one = await asyncio.wait_for(rebuild(dsn, PROJECTIONS["deals"], poll_interval=0.02), 60)
    assert await asyncio.wait_for(everything, 60) == total
    assert one == total
    checkpoints = await pg.fetch(READ_MODEL_CHECKPOINTS, list(PROJECTIONS))
    head = await pg.fetchval("SELECT max(position) FROM events")
    assert {r["position"] for r in checkpoints} == {head}
    assert await pg.fetchval("SELECT sum(version) FROM deals") == total


async def test_an_append_wakes_the_projector_without_waiting_for_its_poll(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    service = DealService(store)
    # Polling once a minute: only the wake an append sends after commit brings it in time.
    async with following(database_url, poll_interval=60):
        await run_workload(service, deals=3, commands=20, seed=4)
        await caught_up(pg, within=20)
        for n in range(3):  # again and again: every append wakes it, not only the first
            await run_workload(service, deals=1, commands=5, seed=50 + n)
            await caught_up(pg, within=20)


async def test_a_sweep_in_pages_raises_what_a_whole_sweep_raises(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    from app.domain.flags import FlagRules
    from app.projections.flags import FlagsProjection, sweep
    from app.projections.runner import tick

    async with following(database_url):
        await run_workload(DealService(store), deals=30, commands=300, seed=61)
        await caught_up(pg)
    later = datetime.now(UTC) + timedelta(days=40)
    flags = FlagsProjection(FlagRules())
    flags.sweep_page_size = 7
    pages = 0
    while True:  # as the runner ticks it: a page per call while `sweeping`
        await tick(pg, flags, later)
        pages += 1
        if not flags.sweeping:
            break
    assert pages >= 3
    paged = await read_models(pg)
    await sweep(pg, later, FlagRules())  # the whole sweep at once adds nothing more
    assert await read_models(pg) == paged
    assert any(row[1] == "slow_in_stage" for row in paged["deal_flags"])


async def test_the_sweep_visits_only_the_deals_time_may_change(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    from app.domain.flags import FlagRules
    from app.projections.flags import FlagsProjection
    from app.projections.runner import tick

    async with following(database_url):
        await run_workload(DealService(store), deals=30, commands=300, seed=62)
        await caught_up(pg)
    judged = "SELECT deal_id, max(evaluated_at) FROM deal_flags GROUP BY 1"

    async def sweep_until_done(flags: FlagsProjection, at: datetime) -> None:
        while True:  # as the runner ticks it: a page per call while `sweeping`
            await tick(pg, flags, at)
            if not flags.sweeping:
                return

    # Restarted with a lower threshold, the first sweep judges every open deal by it, though
    # each deal's stored due time was set under the old one.
    stricter = FlagsProjection(FlagRules(inactive_days=0.001))
    now = datetime.now(UTC) + timedelta(minutes=1)
    inactive = "SELECT count(*) FROM deal_flags WHERE kind = 'inactive' AND cleared_at IS NULL"
    before = await pg.fetchval(inactive)
    await sweep_until_done(stricter, now)
    assert await pg.fetchval(inactive) > before

    # After it, only the deals due are visited.
    soon = now + timedelta(minutes=5)
    judged_before = dict(await pg.fetch(judged))
    waiting = await pg.fetch(
        "SELECT deal_id FROM flag_subjects WHERE due_at > $1 AND status = 'open'", soon
    )
    assert waiting  # most deals have nothing time can change within minutes
    await sweep_until_done(stricter, soon)
    assert await pg.fetchval("SELECT count(*) FROM flag_subjects WHERE due_at <= $1", soon) == 0
    judged_after = dict(await pg.fetch(judged))
    untouched = [r["deal_id"] for r in waiting if r["deal_id"] in judged_before]
    assert untouched and all(judged_after[d] == judged_before[d] for d in untouched)
