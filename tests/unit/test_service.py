"""The service's rules on an in-memory log: retries, refusals, no-ops, the head cache, If-Match
and idempotency. Given stored events, when a command, then the whole events it stored."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from app.domain import commands as c
from app.domain import events as e
from app.domain.decide import Actor
from app.domain.errors import (
    ConcurrentModification,
    CriteriaNotMet,
    DealNotFound,
    DomainError,
    InvalidCommand,
    InvalidTransition,
    PreconditionFailed,
    UnknownEventType,
    UnknownValue,
)
from app.domain.pipeline import DEFAULT_PIPELINE
from app.domain.state import DealState
from app.events.log import AppendResult, NewEvent, RecordedEvent
from app.events.recorded import to_recorded
from app.service.deals import MAX_ATTEMPTS, CommandContext, DealService
from app.service.heads import HeadCache
from app.service.ingest import parse
from tests.memory_store import InMemoryEventStore

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RICK = CommandContext(Actor("rick", "rep", "Rick"))
OPEN = c.OpenDeal(name="Acme", owner="rick", amount=Decimal(48000), close_date=date(2027, 3, 1))


def criteria(stage: str) -> tuple[str, ...]:
    return tuple(criterion.key for criterion in DEFAULT_PIPELINE.stage(stage).exit_criteria)


def proposed_step(stage: str) -> e.NextStepSet:
    template = DEFAULT_PIPELINE.stage(stage).next_step_templates[0]
    return e.NextStepSet(
        description=template.description,
        due_date=(NOW + timedelta(days=template.due_in_days)).date(),
        origin="stage_template",
    )


def evidence(evidence_id: UUID, *supports: str) -> c.RecordEvidence:
    return c.RecordEvidence(
        evidence_id=evidence_id,
        kind="meeting_notes",
        criteria=supports,
        summary="buyer confirmed",
        occurred_at=NOW - timedelta(hours=1),
    )


def process(store: InMemoryEventStore, cache: int = 100) -> DealService:
    """One service process on the shared log, with its own head cache."""
    return DealService(store, clock=lambda: NOW, heads=HeadCache(cache))


async def stored(store: InMemoryEventStore, deal_id: UUID) -> list[e.DomainEvent]:
    return [to_recorded(event).event for event in await store.read_stream(deal_id)]


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore(clock=lambda: NOW)


async def opened(service: DealService) -> UUID:
    return (await service.open(OPEN, RICK)).state.deal_id


async def test_opening_stores_the_deal_and_its_first_proposed_next_step(
    store: InMemoryEventStore,
) -> None:
    deal = await opened(process(store))
    assert await stored(store, deal) == [
        e.DealOpened(
            name="Acme",
            owner="rick",
            amount=Decimal(48000),
            close_date=date(2027, 3, 1),
            pipeline="default",
            pipeline_version=DEFAULT_PIPELINE.version,
            stage="discovery",
        ),
        proposed_step("discovery"),
    ]


async def test_no_evidence_no_progress_and_nothing_stored(store: InMemoryEventStore) -> None:
    service = process(store)
    deal = await opened(service)
    before = store.appends
    with pytest.raises(CriteriaNotMet) as refused:
        await service.execute(deal, c.AdvanceStage(to_stage="qualification"), RICK)
    assert refused.value.extensions["unmet_criteria"] == list(criteria("discovery"))
    assert store.appends == before


async def test_a_command_on_an_unknown_deal_is_refused(store: InMemoryEventStore) -> None:
    with pytest.raises(DealNotFound):
        await process(store).execute(uuid.uuid4(), c.CompleteNextStep(), RICK)


async def test_values_no_event_can_hold_are_an_invalid_command(store: InMemoryEventStore) -> None:
    service = process(store)
    deal = await opened(service)
    with pytest.raises(InvalidCommand, match="owner"):
        await service.execute(deal, c.ChangeDeal(owner=None), RICK)  # type: ignore[arg-type]


async def test_a_retried_command_with_its_idempotency_key_stores_nothing_new(
    store: InMemoryEventStore,
) -> None:
    service = process(store)
    deal = await opened(service)
    call = c.RecordBuyerActivity(activity_type="call_held", occurred_at=NOW)
    keyed = replace(RICK, idempotency_key="k-1")
    first = await service.execute(deal, call, keyed)
    again = await process(store).execute(deal, call, keyed)  # another process, cold cache
    assert (first.event_count, again.event_count) == (1, 0)
    assert again.position == first.position
    assert await stored(store, deal) == [
        *(await stored(store, deal))[:2],
        e.BuyerActivityRecorded(activity_type="call_held", occurred_at=NOW),
    ]


async def test_a_stale_cached_head_loses_the_race_and_is_decided_again_after_the_winner(
    store: InMemoryEventStore,
) -> None:
    a, b = process(store), process(store)
    deal = await opened(a)  # a caches version 2
    await b.execute(deal, c.ChangeDeal(owner="olga"), RICK)  # version 3, a does not know
    result = await a.execute(deal, c.ChangeDeal(close_date=date(2027, 6, 1)), RICK)
    assert result.state.version == 4
    assert (await stored(store, deal))[2:] == [
        e.OwnerAssigned(owner="olga"),
        e.CloseDateChanged(close_date=date(2027, 6, 1)),
    ]
    assert result.state.owner == "olga"  # decided on the winner's state, not the cached one


async def test_a_stale_cached_head_catches_up_on_the_events_the_conflict_brought(
    store: InMemoryEventStore,
) -> None:
    """With N processes most commands land on a head another process moved: the retry
    folds that process's appends, which the lost race read (PostgreSQL: in the same round
    trip), instead of reading the stream again."""
    a, b = process(store), process(store)
    deal = await opened(a)  # a caches version 2
    await b.execute(deal, c.ChangeDeal(owner="olga"), RICK)  # version 3, a does not know
    reads: list[int] = []
    read_stream = store.read_stream

    async def recording(stream_id: UUID, **cut: Any) -> list[RecordedEvent]:
        reads.append(cut.get("after_version", 0))
        return await read_stream(stream_id, **cut)

    store.read_stream = recording  # type: ignore[method-assign]
    result = await a.execute(deal, c.ChangeDeal(close_date=date(2027, 6, 1)), RICK)
    assert reads == []
    assert result.state.version == 4 and result.state.owner == "olga"
    assert result.state == await process(store).load(deal)  # as a replay of the log


async def test_a_refusal_decided_on_a_cached_head_is_checked_on_a_fresh_read(
    store: InMemoryEventStore,
) -> None:
    a, b = process(store), process(store)
    deal = await opened(a)  # a's cache: no evidence
    proof = uuid.uuid4()
    await b.execute(deal, evidence(proof, *criteria("discovery")), RICK)
    result = await a.execute(deal, c.AdvanceStage(to_stage="qualification"), RICK)
    assert (await stored(store, deal))[-2:] == [
        e.StageAdvanced(
            from_stage="discovery",
            to_stage="qualification",
            criteria={criterion: (proof,) for criterion in criteria("discovery")},
            pipeline_version=DEFAULT_PIPELINE.version,
        ),
        proposed_step("qualification"),
    ]
    assert result.state.stage == "qualification"


async def test_a_no_op_decided_on_a_cached_head_is_checked_on_a_fresh_read(
    store: InMemoryEventStore,
) -> None:
    a, b = process(store), process(store)
    deal = await opened(a)  # a's cache: owner rick
    await b.execute(deal, c.ChangeDeal(owner="olga"), RICK)
    result = await a.execute(deal, c.ChangeDeal(owner="rick"), RICK)  # "no change" to a
    assert result.event_count == 1
    assert (await stored(store, deal))[-1] == e.OwnerAssigned(owner="rick")


async def test_if_match_refuses_another_version_and_never_re_decides(
    store: InMemoryEventStore,
) -> None:
    service = process(store)
    deal = await opened(service)
    with pytest.raises(PreconditionFailed) as refused:
        await service.execute(deal, c.ChangeDeal(owner="olga"), replace(RICK, expected_version=1))
    assert refused.value.extensions["current_version"] == 2
    assert len(await stored(store, deal)) == 2


async def test_if_match_on_the_real_version_passes_a_stale_cache(
    store: InMemoryEventStore,
) -> None:
    a, b = process(store), process(store)
    deal = await opened(a)
    await b.execute(deal, c.ChangeDeal(owner="olga"), RICK)
    done = await a.execute(deal, c.ChangeDeal(owner="ann"), replace(RICK, expected_version=3))
    assert done.state.version == 4


async def test_a_retry_decided_on_a_stale_head_answers_as_a_fresh_read(
    store: InMemoryEventStore,
) -> None:
    """Process B holds a stale head when the retry of a command A already applied reaches
    it: If-Match then fails as it would on a fresh read, instead of passing as a duplicate."""
    a, b = process(store), process(store)
    deal = await opened(a)
    v = (await b.execute(deal, c.ChangeDeal(owner="olga"), RICK)).state.version
    note = c.RecordBuyerActivity(activity_type="call_held", occurred_at=NOW)
    retried = replace(RICK, expected_version=v, idempotency_key="k-1")
    assert (await a.execute(deal, note, retried)).event_count == 1
    with pytest.raises(PreconditionFailed):  # the deal is at v + 1 now
        await b.execute(deal, note, retried)
    assert len(await stored(store, deal)) == v + 1


class BusyLog(InMemoryEventStore):
    """A deal so hot that another writer always appends just before us."""

    async def append_at_head(
        self,
        stream_id: UUID,
        version: int,
        head_hash: bytes | None,
        events: Sequence[NewEvent],
        *,
        recorded_at: datetime | None = None,
        claims: Sequence[UUID] = (),
    ) -> AppendResult:
        if version > 0:
            call = {"activity_type": "call_held", "occurred_at": NOW.isoformat(), "details": {}}
            other = NewEvent("BuyerActivityRecorded", call)
            await self.append(stream_id, None, [other])
        return await super().append_at_head(
            stream_id, version, head_hash, events, recorded_at=recorded_at, claims=claims
        )


async def test_a_deal_that_keeps_changing_is_a_conflict_after_bounded_retries() -> None:
    store = BusyLog(clock=lambda: NOW)
    service = process(store)
    deal = await opened(service)
    before = len(await stored(store, deal))
    with pytest.raises(ConcurrentModification):
        await service.execute(deal, c.ChangeDeal(owner="olga"), RICK)
    mine = [event for event in await stored(store, deal) if isinstance(event, e.OwnerAssigned)]
    assert mine == []
    assert len(await stored(store, deal)) == before + MAX_ATTEMPTS  # the other writer's only


def test_the_head_cache_keeps_the_latest_version_and_forgets_the_least_recent() -> None:
    heads = HeadCache(size=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    missing = DealState(deal_id=third)
    heads.put(third, missing, None)
    assert heads.get(third) is None  # "no such deal" is never cached
    live = replace(missing, deal_id=first, version=3, stage="discovery")
    assert live.exists
    heads.put(first, live, b"h3")
    heads.put(first, replace(live, version=2), b"h2")  # an older head never replaces a newer
    assert heads.get(first) == (live, b"h3")
    heads.put(second, replace(live, deal_id=second), b"x")
    heads.get(first)
    heads.put(third, replace(live, deal_id=third), b"y")  # evicts second: least recently used
    assert heads.get(second) is None
    assert heads.get(first) is not None


def test_a_head_announced_as_moved_on_is_read_on_from_not_decided_on() -> None:
    heads = HeadCache(size=2)
    deal, other, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    live = replace(DealState(deal_id=deal), version=3, stage="discovery")
    heads.put(deal, live, b"h3")
    heads.moved([(deal, 3), (unknown, 9)])  # its own head: nothing new; an uncached deal
    assert heads.get(deal) == (live, b"h3")
    assert heads.behind(deal) is None and heads.behind(unknown) is None
    heads.moved([(deal, 5), (deal, 4)])
    assert heads.get(deal) is None
    assert heads.behind(deal) == (live, b"h3")  # where to read on from
    heads.put(deal, replace(live, version=4), b"h4")  # caught up, but not to 5 yet
    assert heads.get(deal) is None
    heads.put(deal, replace(live, version=5), b"h5")
    assert heads.get(deal) == (replace(live, version=5), b"h5")
    heads.moved([(deal, 6)])
    heads.put(other, replace(live, deal_id=other), b"x")
    heads.put(uuid.uuid4(), replace(live, deal_id=other), b"y")  # evicts `deal`
    assert heads.behind(deal) is None and heads.get(deal) is None


def cloud_event(ce_id: str, deal: UUID | str, kind: str = "email_replied") -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": ce_id,
        "source": "//gmail/acme",
        "type": f"com.dealledger.activity.{kind}",
        "subject": str(deal),
        "time": NOW.isoformat(),
        "data": {"response_time_hours": 3},
    }


async def test_ingestion_answers_each_item_and_stores_each_cloudevent_once(
    store: InMemoryEventStore,
) -> None:
    service = process(store)
    deal = await opened(service)
    raws = [
        cloud_event("m-1", deal),
        cloud_event("m-2", deal, kind="meeting_held"),
        cloud_event("m-1", deal),  # the same CloudEvent twice in one batch
        cloud_event("m-3", deal, kind="telepathy"),  # an unknown type: rejected before the log
        cloud_event("m-4", uuid.uuid4()),  # a deal nobody opened
    ]
    items, rejected = [], []
    for raw in raws:
        try:
            items.append(parse(raw, NOW))
        except DomainError as error:
            rejected.append(error)
    assert [type(error) for error in rejected] == [UnknownEventType]
    outcomes = await service.ingest(items, RICK.actor)
    assert [o.status for o in outcomes] == ["accepted", "accepted", "duplicate", "rejected"]
    assert outcomes[2].position == outcomes[0].position
    assert isinstance(outcomes[3].error, DealNotFound)
    assert (await stored(store, deal))[2:] == [
        e.BuyerActivityRecorded(
            activity_type="email_replied", occurred_at=NOW, details={"response_time_hours": 3}
        ),
        e.BuyerActivityRecorded(
            activity_type="meeting_held", occurred_at=NOW, details={"response_time_hours": 3}
        ),
    ]
    # Posted again later, from another process: a duplicate, with the original's position.
    again = await process(store).ingest([parse(raws[0], NOW)], RICK.actor)
    assert [(o.status, o.position) for o in again] == [("duplicate", outcomes[0].position)]
    assert len(await stored(store, deal)) == 4


async def test_an_item_the_decider_refuses_is_rejected_alone(store: InMemoryEventStore) -> None:
    service = process(store)
    deal = await opened(service)
    evidence_for_nothing = {
        **cloud_event("m-9", deal),
        "type": "com.dealledger.evidence.recorded",
        "data": {"kind": "meeting_notes", "criteria": ["no_such_criterion"], "summary": "x"},
    }
    items = [parse(evidence_for_nothing, NOW), parse(cloud_event("m-10", deal), NOW)]
    outcomes = await service.ingest(items, RICK.actor)
    assert [o.status for o in outcomes] == ["rejected", "accepted"]
    assert isinstance(outcomes[0].error, UnknownValue)
    assert [type(event) for event in await stored(store, deal)][2:] == [e.BuyerActivityRecorded]


async def test_a_cloudevent_already_stored_for_another_deal_is_a_duplicate(
    store: InMemoryEventStore,
) -> None:
    first, second = await opened(process(store)), await opened(process(store))
    raw = cloud_event("m-7", first)
    (accepted,) = await process(store).ingest([parse(raw, NOW)], RICK.actor)
    looked_up = store.find_events

    async def saw_nothing_the_first_time(
        ids: Sequence[UUID], stream_id: UUID | None = None
    ) -> dict[UUID, tuple[UUID, int]]:
        """A race: the look-up before deciding missed the other delivery."""
        store.find_events = looked_up  # type: ignore[method-assign]
        return {}

    store.find_events = saw_nothing_the_first_time  # type: ignore[method-assign,assignment]
    moved = parse({**raw, "subject": str(second)}, NOW)
    (answer,) = await process(store).ingest([moved], RICK.actor)
    assert (answer.status, answer.deal_id, answer.position) == (
        "duplicate",
        first,
        accepted.position,
    )
    assert len(await stored(store, second)) == 2  # nothing stored in the second deal


async def test_a_copy_of_a_keyed_command_arriving_after_it_is_answered_as_the_original(
    store: InMemoryEventStore,
) -> None:
    a, b = process(store), process(store)
    deal = await opened(a)
    await a.execute(deal, evidence(uuid.uuid4(), *criteria("discovery")), RICK)
    keyed = replace(RICK, idempotency_key="advance-1")
    first = await a.execute(deal, c.AdvanceStage(to_stage="qualification"), keyed)
    # The same request again, decided on the new state: it would be "already there".
    copy = await b.execute(deal, c.AdvanceStage(to_stage="qualification"), keyed)
    assert (copy.position, copy.event_count) == (first.position, 0)
    with pytest.raises(InvalidTransition):  # without the key it is a new, refused command
        await b.execute(deal, c.AdvanceStage(to_stage="qualification"), RICK)
