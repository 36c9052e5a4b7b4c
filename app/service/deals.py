"""Command handling: load the deal's stream, decide, append; the one place that does it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from app.domain.commands import Command, MigrateDeal, OpenDeal
from app.domain.decide import Actor, Context, decide
from app.domain.errors import ConcurrentModification, DomainError, PreconditionFailed
from app.domain.events import DomainEvent, event_data
from app.domain.identifiers import (
    command_event_id,
    deal_id_for_external_ref,
    follow_on_event_id,
    new_deal_id,
)
from app.domain.pipeline import Catalog, Pipeline
from app.domain.pipeline_versions import PIPELINE_EVENT_TYPES
from app.domain.state import DealState, Recorded, fold, pipelines_named
from app.events.log import (
    AppendResult,
    ClaimedElsewhere,
    EventLog,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    VersionConflict,
)
from app.events.pipelines import PipelineVersions
from app.events.recorded import to_recorded
from app.service.heads import HeadCache
from app.service.ingest import Ingestible
from app.telemetry import DEAL_READS

# Each lost race means another command on the deal won. With heads announced, the others
# come in on fresh heads and a retry has no edge over them: four processes storming three
# deals saw a command lose five times in a row (this was 5).
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class CommandContext:
    """Who sends a command and how: what travels with every command besides its content."""

    actor: Actor
    request_id: str | None = None
    expected_version: int | None = None
    """If-Match: decide only on this version of the deal, else PreconditionFailed."""
    idempotency_key: str | None = None


@dataclass(frozen=True)
class CommandResult:
    state: DealState
    position: int | None
    """The global position of the last event written (None when nothing changed)."""
    event_count: int
    pipeline: Pipeline | None = None
    """The pipeline version the deal lives under (None: no such deal)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one ingested item."""

    status: Literal["accepted", "duplicate", "rejected"]
    deal_id: UUID | None = None
    position: int | None = None
    """Where its event is in the log (for a duplicate: the original's)."""
    error: DomainError | None = None


class DealService:
    def __init__(
        self,
        store: EventLog,
        clock: Callable[[], datetime] | None = None,
        heads: HeadCache | None = None,
        max_clock_skew: timedelta = timedelta(seconds=300),
        pipelines: PipelineVersions | None = None,
    ) -> None:
        """`clock` simulates time (the demo and benchmark generator lay down months of
        history in seconds); without it, decisions use now and events the database clock.
        `heads` and `pipelines` are shared across requests of a process (see HeadCache)."""
        self.store = store
        self.clock = clock
        self.heads = heads if heads is not None else HeadCache(size=0)
        self.max_clock_skew = max_clock_skew
        self.pipelines = pipelines if pipelines is not None else PipelineVersions()

    async def read_stream_after(self, stream_id: UUID, after_version: int) -> list[RecordedEvent]:
        """A stream's events after a version (how pipeline versions are loaded)."""
        return await self.store.read_stream(stream_id, after_version=after_version)

    async def catalog_holding(self, versions: Iterable[tuple[str, int]]) -> Catalog:
        """A catalog holding each (pipeline key, version) of `versions`."""
        return await self.pipelines.ensure(versions, self.read_stream_after)

    async def catalog_for(self, states: list[DealState]) -> Catalog:
        """A catalog holding the pipeline version of each of `states`."""
        return await self.catalog_holding(pipelines_named((), states))

    async def pipeline_of(self, state: DealState) -> Pipeline:
        """The pipeline version `state` lives under."""
        return state.pipeline_in(await self.catalog_for([state]))

    async def latest_pipeline(self, key: str) -> Pipeline | None:
        """The newest version of pipeline `key` in the log (or built in); None: no such one."""
        return (await self.pipelines.refresh(key, self.read_stream_after)).latest(key)

    async def every_pipeline_version(self) -> Catalog:
        """A catalog holding every version of every pipeline the log holds now."""
        for key in await self.pipeline_keys():
            await self.pipelines.refresh(key, self.read_stream_after)
        return self.pipelines.catalog

    async def pipeline_keys(self) -> list[str]:
        """Every pipeline's key: the built-in ones and those in the log."""
        return sorted({*self.pipelines.catalog.keys, *await self.store.pipeline_keys()})

    async def _fold_stored(self, deal_id: UUID, events: list[RecordedEvent]) -> DealState:
        """The deal from its stored events (a pipeline's stream is no deal)."""
        if events and events[0].type in PIPELINE_EVENT_TYPES:
            return DealState(deal_id=deal_id)
        history = [to_recorded(event) for event in events]
        catalog = await self.catalog_holding(pipelines_named(history))
        return fold(deal_id, history, pipelines=catalog)

    async def _read_head(
        self, deal_id: UUID
    ) -> tuple[DealState, bytes | None, list[RecordedEvent]]:
        """The deal read from the log (and cached): its state, last hash and events."""
        DEAL_READS.labels("whole").inc()
        events = await self.store.read_stream(deal_id)
        state = await self._fold_stored(deal_id, events)
        if not state.exists:
            events = []
        head_hash = events[-1].hash if events else None
        self.heads.put(deal_id, state, head_hash)
        return state, head_hash, events

    async def _catch_up(
        self,
        deal_id: UUID,
        state: DealState,
        head_hash: bytes | None,
        missed: list[RecordedEvent] | None = None,
    ) -> tuple[DealState, bytes | None]:
        """`state` (read from the log or cached, at its version) brought to the log's head
        by the events after it (`missed`: as a lost race already read them); cached as the
        new head."""
        state, head_hash, _ = await self._read_on(deal_id, state, head_hash, missed)
        return state, head_hash

    async def _read_on(
        self,
        deal_id: UUID,
        state: DealState,
        head_hash: bytes | None,
        missed: list[RecordedEvent] | None = None,
    ) -> tuple[DealState, bytes | None, list[RecordedEvent]]:
        """`_catch_up`, and the events it read on (all of them if it had to read the deal)."""
        if not state.exists:
            return await self._read_head(deal_id)
        if missed is None:
            DEAL_READS.labels("after_head").inc()
            events = await self.store.read_stream(deal_id, after_version=state.version)
        else:
            events = missed
        if not events:
            return state, head_hash, []
        history = [to_recorded(event) for event in events]
        catalog = await self.catalog_holding(pipelines_named(history, [state]))
        state = fold(deal_id, history, state, pipelines=catalog)
        self.heads.put(deal_id, state, events[-1].hash)
        return state, events[-1].hash, events

    async def _catalog_for_command(self, state: DealState, command: Command) -> Catalog:
        """The versions deciding `command` needs: the deal's own, and for a new deal or a
        migration the newest of its pipeline (read fresh: another process may have
        published one)."""
        if isinstance(command, OpenDeal):
            await self.pipelines.refresh(command.pipeline, self.read_stream_after)
        elif isinstance(command, MigrateDeal) and state.exists:
            await self.pipelines.refresh(state.pipeline_key, self.read_stream_after)
        return await self.catalog_for([state])

    def _appended(
        self,
        deal_id: UUID,
        state: DealState,
        events: list[DomainEvent],
        new_events: list[NewEvent],
        result: AppendResult,
        now: datetime,
    ) -> DealState:
        """The state after an append, at the times the log recorded; cached as the new head."""
        recorded_at = result.recorded_at or now
        history = [
            Recorded(event, state.version + offset, new.occurred_at or recorded_at, recorded_at)
            for offset, (event, new) in enumerate(zip(events, new_events, strict=True), 1)
        ]
        after = fold(deal_id, history, state, self.pipelines.catalog)
        self.heads.put(deal_id, after, result.head_hash)
        return after

    async def load(
        self,
        deal_id: UUID,
        *,
        up_to_position: int | None = None,
        recorded_up_to: datetime | None = None,
    ) -> DealState:
        events = await self.store.read_stream(
            deal_id, up_to_position=up_to_position, recorded_up_to=recorded_up_to
        )
        return await self._fold_stored(deal_id, events)

    async def current(
        self, deal_id: UUID, projected: DealState | None, head_version: int | None
    ) -> DealState:
        """The deal now, at least at `head_version` (the log's; None: the read model has
        applied the whole log): the read model's state when it has reached the head, else
        this process's cached head, else a replay of the log. A read right after any
        acknowledged write shows that write."""
        if head_version is None:
            return projected or DealState(deal_id=deal_id)
        if projected is not None and projected.version >= head_version:
            return projected
        cached = self.heads.get(deal_id)
        if cached is not None and cached[0].version >= head_version:
            return cached[0]
        return await self.load(deal_id)

    async def execute(
        self, deal_id: UUID, command: Command, context: CommandContext
    ) -> CommandResult:
        """Decide and append; a lost race is re-decided on the new state a few times.

        With `context.expected_version` (If-Match) there is no re-deciding: a mismatch is 412.
        """
        actor, expected_version = context.actor, context.expected_version
        # After a conflict or a doubt about the cached head, a next attempt reads what the
        # log holds after the head it decided on (another process's few appends), not the
        # whole stream: with N processes most commands land where another one appended.
        behind: tuple[DealState, bytes | None] | None = None
        missed: list[RecordedEvent] | None = None  # what a lost race read after `behind`
        for _ in range(MAX_ATTEMPTS):
            cached = self.heads.get(deal_id) if behind is None else None
            if cached is None and behind is None:
                behind = self.heads.behind(deal_id)  # another process appended: read on
            if cached is not None:
                state, head_hash = cached
            elif behind is not None:
                state, head_hash = await self._catch_up(deal_id, *behind, missed)
            else:
                state, head_hash = (await self._read_head(deal_id))[:2]
            behind, missed = (state, head_hash), None  # a next attempt reads on from here
            if expected_version is not None and state.version != expected_version:
                if cached is not None:
                    continue
                raise PreconditionFailed(
                    f"deal is at version {state.version}, If-Match said {expected_version}",
                    current_version=state.version,
                )
            now = self.clock() if self.clock else datetime.now(UTC)
            catalog = await self._catalog_for_command(state, command)
            try:
                events = decide(state, command, Context(now, actor, self.max_clock_skew, catalog))
            except DomainError:
                if cached is not None:
                    continue
                if (done := await self._already_done(deal_id, context)) is not None:
                    return await self._result(state, done, 0)
                raise
            if not events:
                if cached is not None:
                    continue
                done = await self._already_done(deal_id, context)
                return await self._result(state, done, 0)
            new_events = self.to_new_events(
                deal_id, events, actor, context.idempotency_key, context.request_id
            )
            try:
                result = await self.store.append_at_head(
                    deal_id,
                    state.version,
                    head_hash,
                    new_events,
                    recorded_at=now if self.clock else None,
                )
            except VersionConflict as conflict:
                self.heads.forget(deal_id)
                if expected_version is not None:
                    raise PreconditionFailed(
                        "deal changed while the command was decided", current_version=None
                    ) from None
                missed = conflict.missed
                continue
            if result.duplicate:
                if cached is not None:
                    continue  # decided on a stale head: answer as a fresh read would
                return await self._result(await self.load(deal_id), max(result.positions), 0)
            after = self._appended(deal_id, state, events, new_events, result, now)
            return await self._result(after, result.last_position, len(events))
        raise ConcurrentModification(
            f"deal {deal_id} kept changing; the command was retried {MAX_ATTEMPTS} times"
        )

    async def _result(self, state: DealState, position: int | None, count: int) -> CommandResult:
        pipeline = await self.pipeline_of(state) if state.exists else None
        return CommandResult(state, position, count, pipeline)

    async def _already_done(self, deal_id: UUID, context: CommandContext) -> int | None:
        """Where a copy of this keyed command is stored, if one is: a copy that arrives just
        after the first committed would be refused on the new state ("already in
        qualification"); it is answered as the original instead."""
        key = context.idempotency_key
        if key is None:
            return None
        # The position of its last event: ids are derived per index (commands write a few).
        ids = [command_event_id(deal_id, context.actor.id, key, i) for i in range(64)]
        found = await self.store.find_events(ids, stream_id=deal_id)
        return max((position for _, position in found.values()), default=None)

    async def open(self, command: OpenDeal, context: CommandContext) -> CommandResult:
        if command.external_ref is not None:
            deal_id = deal_id_for_external_ref(command.external_ref.source, command.external_ref.id)
        else:
            deal_id = new_deal_id(context.actor.id, context.idempotency_key)
        return await self.execute(deal_id, command, replace(context, expected_version=None))

    async def ingest(
        self, items: list[Ingestible], actor: Actor, *, request_id: str | None = None
    ) -> list[Outcome]:
        """Record a batch of items from other systems: one outcome per item, in order.

        An item whose event id is already stored (in any stream) is a duplicate and answers
        with the original position; one the decider refuses is rejected alone. Items for
        the same deal are decided in order and appended together.
        """
        outcomes: list[Outcome | None] = [None] * len(items)
        known = await self.store.find_events([item.event_id for item in items])
        first_of: dict[UUID, int] = {}
        copies: list[tuple[int, int]] = []
        groups: dict[UUID, list[int]] = {}
        for index, item in enumerate(items):
            if item.event_id in known:
                stream_id, position = known[item.event_id]
                outcomes[index] = Outcome("duplicate", stream_id, position)
            elif item.event_id in first_of:
                copies.append((index, first_of[item.event_id]))
            else:
                first_of[item.event_id] = index
                groups.setdefault(item.deal_id, []).append(index)
        one_by_one = await self._ingest_together(groups, items, outcomes, actor, request_id)
        for deal_id in one_by_one:
            await self._ingest_deal(deal_id, groups[deal_id], items, outcomes, actor, request_id)
        for index, first in copies:
            original = outcomes[first]
            assert original is not None
            outcomes[index] = (
                original
                if original.status == "rejected"
                else Outcome("duplicate", original.deal_id, original.position)
            )
        return [outcome for outcome in outcomes if outcome is not None]

    async def _ingest_head(
        self, deal_id: UUID, *, fresh: bool
    ) -> tuple[object | None, DealState, bytes | None, dict[UUID, int]]:
        """(the cached head if one was used, state, last hash, the ids -> positions of the
        events read): from the cache unless `fresh` (or read on from it, when another process
        appended). A read knows the ids of what it read; duplicates across the log as it
        stood when the batch came were looked up before."""
        cached = None if fresh else self.heads.get(deal_id)
        if cached is not None:
            state, head_hash = cached
            return cached, state, head_hash, {}
        behind = None if fresh else self.heads.behind(deal_id)
        if behind is not None:  # another process appended: read on from the cached head
            state, head_hash, stored = await self._read_on(deal_id, *behind)
        else:
            state, head_hash, stored = await self._read_head(deal_id)
        return None, state, head_hash, {event.event_id: event.position for event in stored}

    async def _ingest_together(
        self,
        groups: dict[UUID, list[int]],
        items: list[Ingestible],
        outcomes: list[Outcome | None],
        actor: Actor,
        request_id: str | None,
    ) -> list[UUID]:
        """Every deal's items decided on its head (cached, or read now), then appended in
        ONE transaction for all deals; returns the deals left to `_ingest_deal` one by one
        (a refusal on a cached state to confirm, an unknown deal, or any race)."""
        plans: list[tuple[UUID, DealState, StreamAppend, list[DomainEvent], list[Any], Any]] = []
        later: list[UUID] = []
        for deal_id, indexes in groups.items():
            cached, state, head_hash, in_stream = await self._ingest_head(deal_id, fresh=False)
            if not state.exists:
                later.append(deal_id)
                continue
            new_events, decided, firsts, now = await self._decide_items(
                deal_id, state, indexes, items, outcomes, actor, request_id, in_stream, {}
            )
            refused = any(
                (o := outcomes[index]) is not None and o.status == "rejected" for index in indexes
            )
            if not new_events or (cached is not None and refused):
                for index in indexes:
                    outcomes[index] = None
                later.append(deal_id)
                continue
            claims = [new_events[offset].event_id for _, offset in firsts]
            part = StreamAppend(deal_id, state.version, head_hash, new_events, claims)
            plans.append((deal_id, state, part, decided, firsts, now))
        if not plans:
            return later
        try:
            results = await self.store.append_streams([plan[2] for plan in plans])
        except (VersionConflict, ClaimedElsewhere):
            for deal_id, _, _, _, _, _ in plans:
                self.heads.forget(deal_id)
                for index in groups[deal_id]:
                    outcomes[index] = None
                later.append(deal_id)
            return later
        for (deal_id, state, part, decided, firsts, now), result in zip(
            plans, results, strict=True
        ):
            self._appended(deal_id, state, decided, list(part.events), result, now)
            for index, offset in firsts:
                outcomes[index] = Outcome("accepted", deal_id, result.positions[offset])
        return later

    async def _ingest_deal(
        self,
        deal_id: UUID,
        indexes: list[int],
        items: list[Ingestible],
        outcomes: list[Outcome | None],
        actor: Actor,
        request_id: str | None,
    ) -> None:
        fresh = False
        elsewhere: dict[UUID, tuple[UUID, int]] = {}  # stored meanwhile in another deal
        for _ in range(MAX_ATTEMPTS):
            for index in indexes:
                outcomes[index] = None
            # Duplicates across the log were found before; only a fresh read (after a race)
            # needs the stream's own event ids again.
            cached, state, head_hash, in_stream = await self._ingest_head(deal_id, fresh=fresh)
            fresh = True
            if not state.exists:
                for index in indexes:
                    missing = items[index].unknown_deal()
                    outcomes[index] = Outcome("rejected", deal_id, error=missing)
                return
            plan = await self._decide_items(
                deal_id, state, indexes, items, outcomes, actor, request_id, in_stream, elsewhere
            )
            new_events, decided, firsts, now = plan
            refused = any(
                (o := outcomes[index]) is not None and o.status == "rejected" for index in indexes
            )
            if cached is not None and (refused or not new_events):
                continue  # decided on a cached state: confirm on a fresh read
            if not new_events:
                return
            try:
                result = await self.store.append_at_head(
                    deal_id,
                    state.version,
                    head_hash,
                    new_events,
                    claims=[new_events[offset].event_id for _, offset in firsts],
                )
            except VersionConflict:
                self.heads.forget(deal_id)
                continue
            except ClaimedElsewhere as lost:
                # The same CloudEvent, naming another deal, was stored first: a duplicate.
                elsewhere.update(await self.store.find_events(lost.event_ids))
                continue
            if result.duplicate:
                continue  # a concurrent retry stored some of these: re-read and sort them out
            self._appended(deal_id, state, decided, new_events, result, now)
            for index, offset in firsts:
                outcomes[index] = Outcome("accepted", deal_id, result.positions[offset])
            return
        busy = ConcurrentModification(f"deal {deal_id} kept changing; retry these items")
        for index in indexes:
            if outcomes[index] is None:
                outcomes[index] = Outcome("rejected", deal_id, error=busy)

    async def _decide_items(
        self,
        deal_id: UUID,
        state: DealState,
        indexes: list[int],
        items: list[Ingestible],
        outcomes: list[Outcome | None],
        actor: Actor,
        request_id: str | None,
        in_stream: dict[UUID, int],
        elsewhere: dict[UUID, tuple[UUID, int]],
    ) -> tuple[list[NewEvent], list[DomainEvent], list[tuple[int, int]], datetime]:
        """Decide a deal's items in order on `state`: the events to append, and each accepted
        item's first event; duplicates and refusals are written to `outcomes`."""
        now = datetime.now(UTC)
        catalog = await self.catalog_for([state])
        working = state
        new_events: list[NewEvent] = []
        decided: list[DomainEvent] = []
        firsts: list[tuple[int, int]] = []  # (item index, offset of its first event)
        for index in indexes:
            item = items[index]
            if item.event_id in elsewhere:
                outcomes[index] = Outcome("duplicate", *elsewhere[item.event_id])
                continue
            if item.event_id in in_stream:
                outcomes[index] = Outcome("duplicate", deal_id, in_stream[item.event_id])
                continue
            try:
                context = Context(now, actor, self.max_clock_skew, catalog)
                events = decide(working, item.command, context)
            except DomainError as error:
                outcomes[index] = Outcome("rejected", deal_id, error=error)
                continue
            metadata = {
                **self.metadata(actor, request_id, None),
                "cloudevent": item.envelope.metadata(),
            }
            firsts.append((index, len(new_events)))
            history = []
            for offset, event in enumerate(events):
                occurred_at = getattr(event, "occurred_at", None)
                new_events.append(
                    NewEvent(
                        type=event.type,
                        data=event_data(event),
                        event_id=item.event_id
                        if offset == 0
                        else follow_on_event_id(item.event_id, offset),
                        schema_version=event.schema_version,
                        metadata=metadata,
                        occurred_at=occurred_at,
                    )
                )
                history.append(
                    Recorded(event, working.version + offset + 1, occurred_at or now, now)
                )
                decided.append(event)
            working = fold(deal_id, history, working, catalog)
        return new_events, decided, firsts, now

    @classmethod
    def to_new_events(
        cls,
        deal_id: UUID,
        events: list[DomainEvent],
        actor: Actor,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> list[NewEvent]:
        """What a command's decided events are stored as (also used by the bulk loader)."""
        return [
            NewEvent(
                type=event.type,
                data=event_data(event),
                event_id=command_event_id(deal_id, actor.id, idempotency_key, index),
                schema_version=event.schema_version,
                metadata=cls.metadata(actor, request_id, idempotency_key),
                occurred_at=getattr(event, "occurred_at", None),
            )
            for index, event in enumerate(events)
        ]

    @staticmethod
    def metadata(
        actor: Actor, request_id: str | None, idempotency_key: str | None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "actor": {"id": actor.id, "name": actor.name, "role": actor.role}
        }
        if request_id:
            metadata["request_id"] = request_id
            metadata["correlation_id"] = request_id
        if idempotency_key:
            metadata["idempotency_key"] = idempotency_key
        return metadata
