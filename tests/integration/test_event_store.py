"""The event store's guarantees, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from app.db import APP_ROLE, asyncpg_dsn, create_engine
from app.domain.errors import InvalidEventData
from app.events.announce import announced
from app.events.log import AppendResult, NewEvent, StreamAppend, VersionConflict
from app.events.store import EventStore


def heads_of(payload: str) -> list[tuple[uuid.UUID, int]]:
    return [(item.stream_id, item.version) for item in announced(payload)]


def activity(n: int, **extra: object) -> NewEvent:
    return NewEvent(type="BuyerActivityRecorded", data={"n": n, **extra})


async def test_append_then_read_stream_in_order(store: EventStore) -> None:
    deal = uuid.uuid4()
    first = await store.append(deal, 0, [activity(1), activity(2)])
    second = await store.append(deal, 2, [activity(3)])

    assert first.stream_version == 2 and second.stream_version == 3
    assert first.positions[0] < first.positions[1] < second.positions[0]
    events = await store.read_stream(deal)
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.data["n"] for e in events] == [1, 2, 3]
    assert events[0].prev_hash is None
    assert events[1].prev_hash == events[0].hash


async def test_stale_expected_version_is_a_conflict_not_an_overwrite(store: EventStore) -> None:
    deal = uuid.uuid4()
    await store.append(deal, 0, [activity(1)])
    with pytest.raises(VersionConflict) as conflict:
        await store.append(deal, 0, [activity(2)])
    assert conflict.value.actual_version == 1
    assert [e.data["n"] for e in await store.read_stream(deal)] == [1]


async def test_append_is_all_or_nothing(store: EventStore, pg: asyncpg.Connection) -> None:
    # A trigger in this test's own database makes the second row of the append fail.
    await pg.execute(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.type = 'Poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$"
    )
    await pg.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()"
    )
    deal = uuid.uuid4()
    with pytest.raises(asyncpg.RaiseError, match="poisoned"):
        await store.append(deal, 0, [activity(1), NewEvent("Poison", {})])
    assert await store.read_stream(deal) == []


async def test_text_jsonb_cannot_hold_is_refused_before_writing(store: EventStore) -> None:
    with pytest.raises(InvalidEventData, match="NUL"):
        await store.append(uuid.uuid4(), 0, [activity(1, note="a\u0000b")])


async def test_repeated_event_id_returns_original_positions(store: EventStore) -> None:
    deal = uuid.uuid4()
    event = activity(1)
    first = await store.append(deal, 0, [event])
    again = await store.append(deal, 0, [event])
    assert again.duplicate and again.positions == first.positions
    assert len(await store.read_stream(deal)) == 1


async def test_concurrent_duplicates_store_one_row(store: EventStore) -> None:
    deal = uuid.uuid4()
    event = activity(1)
    results = await asyncio.gather(*(store.append(deal, 0, [event]) for _ in range(12)))
    assert len({tuple(r.positions) for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert len(await store.read_stream(deal)) == 1


async def test_16_racing_writers_get_one_winner_per_version(store: EventStore) -> None:
    deal = uuid.uuid4()
    for expected in range(5):
        outcomes = await asyncio.gather(
            *(store.append(deal, expected, [activity(i)]) for i in range(16)),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(winners) == 1
        assert all(isinstance(o, VersionConflict) for o in losers)
    assert [e.version for e in await store.read_stream(deal)] == [1, 2, 3, 4, 5]


async def test_read_stream_up_to_version_position_and_time(store: EventStore) -> None:
    deal = uuid.uuid4()
    a = await store.append(deal, 0, [activity(1)])
    await asyncio.sleep(0.01)
    b = await store.append(deal, 1, [activity(2)])
    await store.append(deal, 2, [activity(3)])
    events = await store.read_stream(deal)

    assert len(await store.read_stream(deal, up_to_version=2)) == 2
    assert len(await store.read_stream(deal, up_to_position=b.positions[0])) == 2
    assert len(await store.read_stream(deal, up_to_position=a.positions[0])) == 1
    assert len(await store.read_stream(deal, recorded_up_to=events[0].recorded_at)) == 1


async def test_occurred_at_is_kept_and_recorded_at_is_the_database_clock(
    store: EventStore,
) -> None:
    deal = uuid.uuid4()
    met = datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=UTC)
    before = datetime.now(UTC) - timedelta(seconds=5)
    await store.append(deal, 0, [NewEvent("BuyerActivityRecorded", {}, occurred_at=met)])
    (event,) = await store.read_stream(deal)
    assert event.occurred_at == met
    assert event.recorded_at > before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'Forged'",
        "DELETE FROM events",
        "TRUNCATE events",
    ],
)
async def test_database_refuses_changes_to_history(
    store: EventStore, pg: asyncpg.Connection, statement: str
) -> None:
    deal = uuid.uuid4()
    await store.append(deal, 0, [activity(1)])
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pg.execute(statement)
    # Even a replica-mode session (which skips ordinary triggers) is refused.
    await pg.execute("SET session_replication_role = replica")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pg.execute(statement)
    await pg.execute("SET session_replication_role = origin")
    assert len(await store.read_stream(deal)) == 1


async def test_verify_passes_on_untouched_log(store: EventStore) -> None:
    deals = [uuid.uuid4() for _ in range(3)]
    for deal in deals:
        await store.append(
            deal,
            0,
            [activity(1, amount=1.0, big=2**60, tiny=0.1, nested={"z": 1, "a": [1e20]})],
        )
        await store.append(deal, 1, [activity(2, name="Zoë")])
    result = await store.verify()
    assert result.valid and result.events_checked == 6
    one = await store.verify(deals[0])
    assert one.valid and one.events_checked == 2
    assert one.head_hash == (await store.read_stream(deals[0]))[-1].hash.hex()


async def test_verify_pinpoints_a_tampered_event(store: EventStore, pg: asyncpg.Connection) -> None:
    deal, other = uuid.uuid4(), uuid.uuid4()
    await store.append(deal, 0, [activity(1), activity(2), activity(3)])
    await store.append(other, 0, [activity(1)])
    # Tamper behind the triggers' back, as only a superuser could.
    await pg.execute("ALTER TABLE events DISABLE TRIGGER USER")
    await pg.execute(
        "UPDATE events SET data = '{\"n\": 99}' WHERE stream_id = $1 AND version = 2", deal
    )
    await pg.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_delete")

    result = await store.verify(deal)
    assert not result.valid
    assert (result.first_invalid_stream, result.first_invalid_version) == (deal, 2)
    whole = await store.verify()
    assert not whole.valid and whole.first_invalid_version == 2
    assert (await store.verify(other)).valid


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'Forged'",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER USER",
        "DROP TABLE events",
    ],
)
async def test_the_service_role_has_no_right_to_change_history(
    store: EventStore, database_url: str, statement: str
) -> None:
    """Privileges, not just triggers: the role the service connects as cannot even try."""
    deal = uuid.uuid4()
    await store.append(deal, 0, [activity(1)])
    service = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        assert await service.fetchval("SELECT current_user") == APP_ROLE
        assert not await service.fetchval(
            "SELECT pg_has_role(current_user, (SELECT tableowner FROM pg_tables"
            " WHERE tablename = 'events'), 'MEMBER')"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await service.execute(statement)
        # What it needs, it has: reading, appending, and rebuilding read models.
        assert await service.fetchval("SELECT count(*) FROM events") == 1
        await service.execute("TRUNCATE deals, stage_intervals, deal_activity")
    finally:
        await service.close()
    assert len(await store.read_stream(deal)) == 1


async def test_append_at_head_hashes_with_the_database_clock_in_any_time_zone(
    database_url: str, pg: asyncpg.Connection
) -> None:
    """The one-statement append hashes in SQL; verify (hashing in Python) must agree, even
    when the session's time zone is not UTC and the event's text looks like a time."""
    database = await pg.fetchval("SELECT current_database()")
    await pg.execute(f"ALTER DATABASE \"{database}\" SET TimeZone = 'Asia/Kolkata'")
    engine = create_engine(database_url, pool_size=2)
    store = EventStore(engine)
    try:
        deal = uuid.uuid4()
        head: bytes | None = None
        occurred = [None, datetime(2026, 11, 20, 9, 30, tzinfo=UTC), None]
        for version, when in enumerate(occurred):
            text = {"note": "2026-11-20T09:30:00.000000Z", "n": version, "naïve": "é"}
            result = await store.append_at_head(
                deal, version, head, [NewEvent("BuyerActivityRecorded", text, occurred_at=when)]
            )
            head = result.head_hash
        stale = store.append_at_head(deal, 1, None, [NewEvent("BuyerActivityRecorded", {})])
        with pytest.raises(VersionConflict):
            await stale
        events = await store.read_stream(deal)
        assert [e.version for e in events] == [1, 2, 3]
        assert events[0].occurred_at == events[0].recorded_at
        assert events[1].occurred_at == occurred[1]
        assert events[-1].hash == head
        verdict = await store.verify(deal)
        assert verdict.valid and verdict.events_checked == 3
        # A multi-event append continues the chain the SQL hash started.
        await store.append_at_head(
            deal, 3, head, [NewEvent("BuyerActivityRecorded", {"k": k}) for k in range(2)]
        )
        assert (await store.verify(deal)).valid
    finally:
        await engine.dispose()
        await pg.execute(f'ALTER DATABASE "{database}" RESET TimeZone')


async def test_appends_wake_the_logs_followers_without_waiting_for_it(
    store: EventStore, pg: asyncpg.Connection
) -> None:
    """Projectors LISTEN on `events`: every burst of appends is followed by a NOTIFY, sent
    after the appends return (one at a time, covering every append made meanwhile)."""
    woken: asyncio.Queue[str] = asyncio.Queue()

    def heard(*args: object) -> None:
        woken.put_nowait(str(args[2]))

    await pg.add_listener("events", heard)
    try:
        deals = [uuid.uuid4() for _ in range(8)]
        await asyncio.gather(
            *(store.append(deal, 0, [NewEvent("BuyerActivityRecorded", {})]) for deal in deals)
        )
        await store.followers.settled()
        assert await asyncio.wait_for(woken.get(), timeout=10) == "events"
        await asyncio.sleep(0.2)  # any further wakes arrive meanwhile
        assert 1 + woken.qsize() <= len(deals)  # coalesced: never more wakes than appends
        await store.append(deals[0], 1, [NewEvent("BuyerActivityRecorded", {})])
        await store.followers.settled()
        assert await asyncio.wait_for(woken.get(), timeout=10) == "events"
    finally:
        await pg.remove_listener("events", heard)


async def test_the_wake_announces_the_heads_the_appends_reached(
    store: EventStore, pg: asyncpg.Connection
) -> None:
    """Other processes' head caches learn from the NOTIFY which deals moved, and to which
    version; a duplicate moves nothing and announces nothing."""
    heard: list[tuple[uuid.UUID, int]] = []

    def listen(*args: object) -> None:
        heard.extend(heads_of(str(args[3])))

    await pg.add_listener("events", listen)
    try:
        deals = [uuid.uuid4() for _ in range(5)]
        first = await asyncio.gather(
            *(store.append(deal, 0, [NewEvent("BuyerActivityRecorded", {})]) for deal in deals)
        )
        again = NewEvent("BuyerActivityRecorded", {}, event_id=uuid.uuid4())
        await store.append_at_head(
            deals[0], 1, first[0].head_hash, [again, NewEvent("CallHeld", {})]
        )
        await store.append(deals[0], None, [again])  # stored already: a duplicate
        await store.followers.settled()
        await asyncio.sleep(0.3)  # every announcement arrives meanwhile
        assert sorted(heard) == sorted([*((deal, 1) for deal in deals), (deals[0], 3)])
    finally:
        await pg.remove_listener("events", listen)
    assert heads_of("not a head\nalso:not") == []


async def test_a_wake_after_appends_to_many_deals_announces_every_head(
    store: EventStore, pg: asyncpg.Connection
) -> None:
    """A payload holds 150 heads: a wake covering more (a batch over many deals, or a burst
    of appends while a NOTIFY was on its way) sends further NOTIFYs, losing none."""
    heard: list[tuple[uuid.UUID, int]] = []

    def listen(*args: object) -> None:
        heard.extend(heads_of(str(args[3])))

    await pg.add_listener("events", listen)
    try:
        moved = [(uuid.uuid4(), k % 7 + 1) for k in range(401)]
        store.followers.wake(
            AppendResult(s, v, [v], recorded_at=datetime.now(UTC)) for s, v in moved
        )
        await store.followers.settled()
        for _ in range(50):
            if len(heard) >= len(moved):
                break
            await asyncio.sleep(0.1)
        assert sorted(heard) == sorted(moved)
    finally:
        await pg.remove_listener("events", listen)


async def test_a_lost_race_returns_the_events_the_loser_missed(store: EventStore) -> None:
    """Another process appended after the head this one knew: the conflict carries the
    events after that head (as a read would give them), so the loser catches up on them."""
    deal = uuid.uuid4()
    first = await store.append_at_head(deal, 0, None, [NewEvent("BuyerActivityRecorded", {})])
    moved = await store.append_at_head(
        deal,
        1,
        first.head_hash,
        [NewEvent("BuyerActivityRecorded", {"n": n}) for n in range(2)],
    )
    for stale in (
        [NewEvent("BuyerActivityRecorded", {"late": True})],
        [NewEvent("BuyerActivityRecorded", {"late": n}) for n in range(2)],
    ):
        with pytest.raises(VersionConflict) as conflict:
            await store.append_at_head(deal, 1, first.head_hash, stale)
        assert conflict.value.actual_version == moved.stream_version == 3
        assert conflict.value.missed == await store.read_stream(deal, after_version=1)
    # An event the stream holds already, sent again at its head: the original, no conflict.
    (original,) = await store.read_stream(deal, up_to_version=1)
    again = NewEvent("BuyerActivityRecorded", {}, original.event_id)
    for head in (1, 3):  # on a stale head and on the current one
        retried = await store.append_at_head(deal, head, None, [again])
        assert retried.duplicate and retried.positions == [original.position]


async def test_a_batch_caught_in_a_deadlock_is_a_conflict_the_caller_retries_not_an_error(
    store: EventStore, pg: asyncpg.Connection, owner_url: str
) -> None:
    """Two batches claiming the same CloudEvent ids in opposite orders wait on each other;
    PostgreSQL ends one of them. That one wrote nothing and must say so as a conflict (its
    caller then goes stream by stream), not fail the request (it was a 500)."""
    deal_a, deal_b = uuid.uuid4(), uuid.uuid4()
    first, second = sorted([uuid.uuid4(), uuid.uuid4()])
    other = await asyncpg.connect(asyncpg_dsn(owner_url))
    transaction = other.transaction()
    await transaction.start()
    claim = "INSERT INTO cloudevent_ids (event_id, stream_id, position) VALUES ($1, $2, 1)"
    try:
        # The other batch holds `second` and comes for `first` last: its deadlock check runs
        # after ours, so ours is the one ended.
        await other.execute("SET deadlock_timeout = '20s'")
        await other.execute(claim, second, deal_b)
        batch = asyncio.create_task(
            store.append_streams(
                [
                    StreamAppend(deal, 0, None, [NewEvent("BuyerActivityRecorded", {}, id)], [id])
                    for deal, id in ((deal_a, first), (deal_b, second))
                ]
            )
        )
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%cloudevent_ids%' AND pid <> pg_backend_pid()"
        )
        for _ in range(400):
            if await pg.fetchval(waiting):
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the batch never waited for the other's claim")
        closing = asyncio.create_task(other.execute(claim, first, deal_a))
        with pytest.raises(VersionConflict):
            await batch
        await closing  # ours rolled back: the other batch goes on
    finally:
        await transaction.rollback()
        await other.close()
    assert not await pg.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", deal_a)
