"""What appends announce to other processes (app.events.announce), and how a process's head
cache folds it: the head it reaches must be the one a read of the log would give."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain import commands as c
from app.domain.state import DealState, fold
from app.events.announce import MAX_PAYLOAD, Pending, add, announced, payloads
from app.events.log import AppendResult, NewEvent, RecordedEvent
from app.events.recorded import to_recorded
from app.service.heads import HeadCache
from tests.memory_store import InMemoryEventStore
from tests.unit.test_service import RICK, criteria, evidence, opened, process

AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def appended(stream: UUID, version: int, events: list[NewEvent], at: datetime) -> AppendResult:
    return AppendResult(
        stream,
        version,
        list(range(len(events))),
        recorded_at=at,
        head_hash=version.to_bytes(32, "big"),
        appended=events,
    )


def as_new(event: RecordedEvent) -> NewEvent:
    return NewEvent(
        event.type,
        event.data,
        event.event_id,
        event.schema_version,
        event.metadata,
        event.occurred_at,
    )


def test_announced_events_read_back_as_appended() -> None:
    deal, other = uuid.uuid4(), uuid.uuid4()
    pending: dict[UUID, Pending] = {}
    first = [
        NewEvent("BuyerActivityRecorded", {"activity_type": "email_replied", "n": 1.5}),
        NewEvent(
            "CallHeld",
            {"note": 'ünïcode, "quotes"\nand a newline'},
            occurred_at=AT - timedelta(days=2),
        ),
    ]
    add(pending, appended(deal, 4, first, AT))
    later = [NewEvent("BuyerActivityRecorded", {"n": 3})]
    add(pending, appended(deal, 5, later, AT + timedelta(seconds=1)))  # merged
    add(pending, appended(other, 1, later, AT))
    add(
        pending, AppendResult(other, 1, [7], duplicate=True, appended=later)
    )  # announces nothing new

    heard = {item.stream_id: item for text in payloads(pending) for item in announced(text)}
    assert set(heard) == {deal, other}
    assert heard[deal].version == 5 and heard[deal].head_hash == (5).to_bytes(32, "big")
    events = heard[deal].events()
    assert events is not None
    assert [(e.version, e.type, e.data) for e in events] == [
        (3, "BuyerActivityRecorded", {"activity_type": "email_replied", "n": 1.5}),
        (4, "CallHeld", {"note": 'ünïcode, "quotes"\nand a newline'}),
        (5, "BuyerActivityRecorded", {"n": 3}),
    ]
    # occurred_at defaults to the recording time, as the store records it
    assert [e.occurred_at for e in events] == [
        AT,
        AT - timedelta(days=2),
        AT + timedelta(seconds=1),
    ]
    assert [e.recorded_at for e in events] == [AT, AT, AT + timedelta(seconds=1)]


def test_after_a_gap_only_the_events_after_it_are_announced() -> None:
    """Another process appended between two of this one's appends: hearers cannot fold
    across the gap, so the earlier events are dropped and the head is the latest."""
    deal = uuid.uuid4()
    pending: dict[UUID, Pending] = {}
    one = [NewEvent("CallHeld", {})]
    add(pending, appended(deal, 2, one, AT))
    add(pending, appended(deal, 6, one, AT))
    (item,) = announced(payloads(pending)[0])
    events = item.events()
    assert item.version == 6 and events is not None and [e.version for e in events] == [6]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 5000)), min_size=1, max_size=60))
def test_payloads_fit_a_notify_and_announce_every_head(streams: list[tuple[int, int]]) -> None:
    """Whatever was appended, every payload stays under PostgreSQL's 8000 bytes and every
    stream's head is announced once; its events come along whenever they fit."""
    pending: dict[UUID, Pending] = {}
    for count, size in streams:
        events = [NewEvent("CallHeld", {"note": "x" * size}) for _ in range(count)]
        add(pending, appended(uuid.uuid4(), count + 1, events, AT))
    texts = payloads(pending)
    assert all(len(text.encode()) < 8000 for text in texts)
    heard = [item for text in texts for item in announced(text)]
    assert sorted((i.stream_id, i.version) for i in heard) == sorted(
        (stream, p.version) for stream, p in pending.items()
    )
    notes = {
        stream: len(p.events or []) * len(p.events[0][0].data["note"]) if p.events else 0
        for stream, p in pending.items()
    }
    for item in heard:
        got = item.events()
        if notes[item.stream_id] < 3000:  # fits in any payload
            assert got is not None and len(got) == len(pending[item.stream_id].events or [])
        if notes[item.stream_id] > MAX_PAYLOAD:  # cannot fit: the head alone
            assert got is None


def test_events_that_cannot_be_encoded_announce_the_head_alone() -> None:
    deal = uuid.uuid4()
    pending: dict[UUID, Pending] = {}
    odd = [NewEvent("CallHeld", {"at": object()})]
    add(pending, appended(deal, 1, odd, AT))
    (item,) = announced(payloads(pending)[0])
    assert (item.stream_id, item.version, item.events()) == (deal, 1, None)


def test_times_are_heard_in_utc_to_the_microsecond_as_a_read_gives_them() -> None:
    """A time given with another offset is heard in UTC (a read of the log gives UTC; a
    cached head must answer the same text), whole seconds and microseconds alike."""
    deal = uuid.uuid4()
    berlin = timezone(timedelta(hours=2))
    when = datetime(2026, 11, 19, 9, 30, 5, 7, tzinfo=berlin)
    pending: dict[UUID, Pending] = {}
    events = [NewEvent("CallHeld", {}, occurred_at=when), NewEvent("CallHeld", {})]
    add(pending, appended(deal, 2, events, AT.astimezone(berlin)))
    (item,) = announced(payloads(pending)[0])
    heard = item.events()
    assert heard is not None
    assert [(e.occurred_at, e.recorded_at) for e in heard] == [(when, AT), (AT, AT)]
    for moment in (heard[0].occurred_at, heard[0].recorded_at, heard[1].occurred_at):
        assert moment.utcoffset() == timedelta(0)
    assert heard[0].occurred_at.isoformat() == "2026-11-19T07:30:05.000007+00:00"


def test_unreadable_lines_are_skipped() -> None:
    deal = uuid.uuid4()
    assert announced(f"not a head\nalso:not\n{deal.hex}:3") == [announced(f"{deal.hex}:3")[0]]


async def test_a_cached_head_folds_what_another_process_appended_as_a_read_would() -> None:
    store = InMemoryEventStore(clock=lambda: AT)
    service = process(store)
    deal = await opened(service)
    for key in criteria("discovery"):
        await service.execute(deal, evidence(uuid.uuid4(), key), RICK)
    await service.execute(deal, c.AdvanceStage(to_stage="qualification"), RICK)
    log = await store.read_stream(deal)
    catalog = service.pipelines.catalog

    def state_after(events: list[RecordedEvent]) -> DealState:
        return fold(deal, [to_recorded(event) for event in events], pipelines=catalog)

    # This process cached the deal three events in; another appended the rest in two goes.
    heads = HeadCache(10)
    heads.put(deal, state_after(log[:3]), log[2].hash)
    pending: dict[UUID, Pending] = {}
    for part in (log[3:-2], log[-2:]):
        news = [as_new(event) for event in part]
        result = appended(deal, part[-1].version, news, part[-1].recorded_at)
        add(pending, replace(result, head_hash=part[-1].hash))
    heads.heard([item for text in payloads(pending) for item in announced(text)], catalog)
    assert heads.get(deal) == (state_after(log), log[-1].hash)
    assert state_after(log).stage == "qualification"

    # Heard with only its head (or after a gap): known to be behind, read on from.
    heads = HeadCache(10)
    heads.put(deal, state_after(log[:3]), log[2].hash)
    gap: dict[UUID, Pending] = {}
    add(gap, replace(appended(deal, len(log), [as_new(log[-1])], AT), head_hash=log[-1].hash))
    heads.heard([item for text in payloads(gap) for item in announced(text)], catalog)
    assert heads.get(deal) is None
    assert heads.behind(deal) == (state_after(log[:3]), log[2].hash)
