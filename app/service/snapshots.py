"""The pipeline and its flags as they stand now (the read models) or as they stood at a past
time (each deal replayed from the log): deal states, stage totals, forecast, flags."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import chain
from typing import Any
from uuid import UUID

import asyncpg

from app.domain.errors import DealNotFound
from app.domain.flags import Flag, FlagRules, Subject, advance, evaluate
from app.domain.pipeline import DEFAULT_PIPELINE, DISQUALIFIED, NURTURE, WON, Catalog
from app.domain.pipeline_versions import PIPELINE_EVENT_TYPES
from app.domain.state import DealState, fold, pipelines_named
from app.events.recorded import histories_recorded_by, to_recorded
from app.events.store import streams_after
from app.projections.deals import (
    deals_holding,
    deals_page,
    deals_then,
    forecast_groups,
    list_deals,
)
from app.projections.flags import (
    FlagFilter,
    FlagKey,
    FlagOnDeal,
    FlagRow,
    flag_key,
    flags_of,
    open_flags,
    subject_of,
    subjects_recorded_by,
)
from app.projections.runner import load_checkpoint
from app.service.deals import DealService


async def deal_states(
    connection: asyncpg.Connection,
    service: DealService,
    as_of: datetime | None,
    *,
    owner: str | None = None,
    status: str | None = None,
) -> list[DealState]:
    """Every deal of `owner` with `status` (None: any), now, from the deals read model; or
    as it stood at `as_of` (its owner and status then decide), see `_states_then`."""
    states: list[DealState] = []
    after = 0
    if as_of is None:
        while page := await list_deals(
            connection, stage=None, owner=owner, status=status, after_position=after, limit=1000
        ):
            states += [state for _, state in page]
            after = page[-1][0]
        return states
    return await _states_then(connection, service, as_of, owner, status)


REPLAYED_TOGETHER = 500
"""Deals replayed from one read of the log."""


async def _states_then(
    connection: asyncpg.Connection,
    service: DealService,
    as_of: datetime,
    owner: str | None,
    status: str | None,
) -> list[DealState]:
    """Every deal as it stood at `as_of`, in opening order: as the log replayed to then has
    it. A deal whose every event the read model applied was recorded by then stands as the
    read model has it; one with events recorded later, or the projection has not applied
    yet, is replayed from the log, many deals to a read; one opened later did not exist.
    (Replaying every deal, one read each, took 36 s at 100k deals.) This takes recorded_at
    to grow with the version in a stream; two appends racing on one deal can invert them by
    under a millisecond (a transaction reads the head after it begins), and at a time inside
    that gap the replay itself shows a version missing: left so."""
    # The streams the projection has not caught up with, read before the read model: a deal
    # it applies meanwhile is replayed anyway, and one it has not reached is in this set.
    behind = await streams_after(connection, await load_checkpoint(connection, "deals"))
    found: list[tuple[int, DealState]] = []
    replay: dict[UUID, int] = {}  # deal -> its first position (its place in the answer)
    after = 0
    while page := await deals_then(connection, as_of, after, 1000, owner=owner, status=status):
        for position, deal_id, state in page:
            if state is None or deal_id in behind:
                replay[deal_id] = position
            else:
                found.append((position, state))
        after = page[-1][0]
    for stream_id, first in behind.items():
        replay.setdefault(stream_id, first)
    deals = list(replay)
    for start in range(0, len(deals), REPLAYED_TOGETHER):
        histories = await histories_recorded_by(
            connection, deals[start : start + REPLAYED_TOGETHER], as_of
        )
        catalog = await service.catalog_holding(pipelines_named(chain(*histories.values())))
        for deal_id, history in histories.items():
            state = fold(deal_id, history, pipelines=catalog)
            if state.exists and owner in (None, state.owner) and status in (None, state.status):
                found.append((replay[deal_id], state))
    found.sort(key=lambda item: item[0])
    return [state for _, state in found]


@dataclass(frozen=True)
class StageTotal:
    stage: str
    count: int
    amounts: dict[str, Decimal]
    """Sum of deal amounts per currency (deals without a currency under "")."""
    weighted: dict[str, Decimal]
    """Open deals' amounts x their stage's probability, per currency."""


@dataclass(frozen=True)
class PipelineSnapshot:
    stages: list[StageTotal]
    deals: list[DealState]
    """The page of deals asked for, in opening order."""
    total: int
    """Deals the totals cover (every page)."""


@dataclass(frozen=True)
class Holding:
    """Deals alike for the pipeline's totals: stage, status, currency, pipeline version and
    amount (deals_holding reads them grouped so in SQL)."""

    stage: str
    status: str
    currency: str | None
    pipeline: tuple[str, int]
    amount: Decimal | None
    deals: int


def holdings_of(states: list[DealState]) -> list[Holding]:
    counted: dict[tuple[str, str, str | None, tuple[str, int], Decimal | None], int]
    counted = defaultdict(int)
    for s in states:
        key = (s.stage, s.status, s.currency, (s.pipeline_key, s.pipeline_version), s.amount)
        counted[key] += 1
    return [
        Holding(stage, status, currency, pipeline, amount, n)
        for (stage, status, currency, pipeline, amount), n in counted.items()
    ]


def stage_totals(holdings: list[Holding], catalog: Catalog, stage: str | None) -> list[StageTotal]:
    """Count, amounts and weighted amounts per stage (every stage of the default pipeline and
    the closed ones, then any other in name order); each deal's weighted amount is rounded
    to the cent before it is summed."""
    stage_order = [*DEFAULT_PIPELINE.stage_keys, NURTURE, WON, DISQUALIFIED]
    counts: dict[str, int] = defaultdict(int)
    amounts: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    weighted: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for h in holdings:
        counts[h.stage] += h.deals
        if h.amount is not None:
            amounts[h.stage][h.currency or ""] += h.amount * h.deals
            pipeline = catalog.get(*h.pipeline)
            if h.status == "open" and h.stage in pipeline.stage_keys:
                chance = Decimal(str(pipeline.stage(h.stage).probability))
                each = (h.amount * chance).quantize(Decimal("0.01"))
                weighted[h.stage][h.currency or ""] += each * h.deals
    order = stage_order + sorted(set(counts) - set(stage_order))
    if stage is not None:
        order = [stage]
    return [StageTotal(s, counts[s], dict(amounts[s]), dict(weighted[s])) for s in order]


async def pipeline_snapshot(
    connection: asyncpg.Connection,
    service: DealService,
    as_of: datetime | None,
    *,
    owner: str | None = None,
    stage: str | None = None,
    start: int = 0,
    limit: int | None = None,
) -> PipelineSnapshot:
    """The deals (of `owner`, in `stage`) from the `start`th, at most `limit`, now or as of a
    time, and the totals per stage over all of them. Now, the totals are summed in SQL and
    only the page's states are read; a past time replays every deal."""
    if as_of is None:
        holdings = [Holding(**row) for row in await deals_holding(connection, owner, stage)]
        page = await deals_page(connection, owner, stage, start, limit)
    else:
        states = [
            s
            for s in await deal_states(connection, service, as_of, owner=owner)
            if stage in (None, s.stage)
        ]
        holdings = holdings_of(states)
        page = states[start : None if limit is None else start + limit]
    catalog = await service.catalog_holding(h.pipeline for h in holdings)
    return PipelineSnapshot(
        stages=stage_totals(holdings, catalog, stage),
        deals=page,
        total=sum(h.deals for h in holdings),
    )


@dataclass(frozen=True)
class ForecastRow:
    close_month: str | None
    owner: str
    currency: str | None
    deals: int
    amount: Decimal
    weighted: Decimal
    """Amount x the stage's probability, summed (0 for overdue rows: no month's revenue)."""
    overdue: bool = False
    """The close month has passed with the deal still open: shown, never forecast."""


@dataclass(frozen=True)
class Forecast:
    total_weighted: dict[str, Decimal]
    """Per currency ("" for none)."""
    rows: list[ForecastRow]
    overdue_amount: dict[str, Decimal]
    """Open amounts whose close month has passed, per currency: to re-date or close."""


OVERDUE = "overdue"


@dataclass(frozen=True)
class OpenGroup:
    """Open deals with an amount sharing a close month, owner, currency and stage."""

    close_month: str | None
    owner: str
    currency: str | None
    pipeline: tuple[str, int]
    stage: str
    deals: int
    amount: Decimal


def open_groups(states: list[DealState]) -> list[OpenGroup]:
    """`states` grouped as the forecast needs them (what `forecast_groups` reads in SQL)."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for state in states:
        if state.status != "open" or state.amount is None:
            continue
        month = state.close_date.strftime("%Y-%m") if state.close_date else None
        key = (month, state.owner, state.currency, state.pipeline_key, state.pipeline_version)
        entry = sums.setdefault((*key, state.stage), [0, Decimal(0)])
        entry[0] += 1
        entry[1] += state.amount
    return [
        OpenGroup(month, who, currency, (key, version), stage, n, amount)
        for (month, who, currency, key, version, stage), (n, amount) in sums.items()
    ]


def forecast_of(
    groups: list[OpenGroup], owner: str | None, today: date, pipelines: Catalog
) -> list[ForecastRow]:
    """Open deals weighted by the probability of their stage in their pipeline version, per
    close month, owner and currency; deals whose close month is before `today`'s fall in an
    `overdue` row, weighted 0."""
    this_month = today.strftime("%Y-%m")
    sums: dict[tuple[str | None, str, str | None], list[Any]] = {}
    for group in groups:
        if owner is not None and group.owner != owner:
            continue
        stage = pipelines.get(*group.pipeline).stage(group.stage)
        probability = Decimal(str(stage.probability))
        month = group.close_month
        if month is not None and month < this_month:
            month, probability = OVERDUE, Decimal(0)
        entry = sums.setdefault((month, group.owner, group.currency), [0, Decimal(0), Decimal(0)])
        entry[0] += group.deals
        entry[1] += group.amount
        entry[2] += group.amount * probability
    return [
        ForecastRow(
            close_month=month,
            owner=who,
            currency=currency,
            deals=n,
            amount=amount,
            weighted=weighted.quantize(Decimal("0.01")),
            overdue=month == OVERDUE,
        )
        for (month, who, currency), (n, amount, weighted) in sorted(
            sums.items(), key=lambda item: (item[0][0] or "", item[0][1], item[0][2] or "")
        )
    ]


async def forecast(
    connection: asyncpg.Connection,
    service: DealService,
    as_of: datetime | None,
    *,
    owner: str | None = None,
) -> Forecast:
    """The open pipeline (now or as of a time) weighted by stage probability, per close
    month, owner and currency, with the weighted totals per currency. Now, the open deals
    are summed in SQL per month, owner, currency and stage (no deal's state is parsed)."""
    if as_of is None:
        groups = [OpenGroup(**row) for row in await forecast_groups(connection, owner)]
    else:
        states = await deal_states(connection, service, as_of, owner=owner, status="open")
        groups = open_groups(states)
    today = (as_of or datetime.now(UTC)).astimezone(UTC).date()
    catalog = await service.catalog_holding(group.pipeline for group in groups)
    rows = forecast_of(groups, owner, today, catalog)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    overdue: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row.overdue:
            overdue[row.currency or ""] += row.amount
        else:
            totals[row.currency or ""] += row.weighted
    return Forecast(total_weighted=dict(totals), rows=rows, overdue_amount=dict(overdue))


async def subject_as_of(service: DealService, deal_id: UUID, as_of: datetime) -> Subject:
    """The deal's flag subject from its events recorded up to `as_of` (replayed)."""
    subject = Subject(DealState(deal_id=deal_id))
    stored = await service.store.read_stream(deal_id, recorded_up_to=as_of)
    if stored and stored[0].type in PIPELINE_EVENT_TYPES:
        return subject  # a pipeline's stream, no deal
    history = [to_recorded(event) for event in stored]
    catalog = await service.catalog_holding(pipelines_named(history))
    for recorded in history:
        subject = advance(subject, recorded, catalog)
    return subject


async def subjects_then(
    connection: asyncpg.Connection,
    service: DealService,
    deal_ids: Sequence[UUID],
    as_of: datetime,
) -> dict[UUID, Subject]:
    """These deals' flag subjects from their events recorded up to `as_of`, replayed
    `REPLAYED_TOGETHER` deals per read of the log (one read per deal took 45 s for the weekly
    review as of a day before at 100k deals). A deal not opened by then, or a pipeline's
    stream, has an empty subject."""
    subjects: dict[UUID, Subject] = {}
    for start in range(0, len(deal_ids), REPLAYED_TOGETHER):
        some = deal_ids[start : start + REPLAYED_TOGETHER]
        histories = await histories_recorded_by(connection, some, as_of)
        catalog = await service.catalog_holding(pipelines_named(chain(*histories.values())))
        for deal_id in some:
            subject = Subject(DealState(deal_id=deal_id))
            for recorded in histories.get(deal_id, ()):
                subject = advance(subject, recorded, catalog)
            subjects[deal_id] = subject
    return subjects


async def stored_or_replayed(
    connection: asyncpg.Connection,
    service: DealService,
    stored: Sequence[tuple[UUID, Subject | None]],
    as_of: datetime,
) -> list[tuple[UUID, Subject]]:
    """Each deal's stored subject, or where there is none (events recorded after `as_of`)
    the deal replayed to `as_of`, those together (`subjects_then`)."""
    replayed = await subjects_then(
        connection, service, [deal_id for deal_id, subject in stored if subject is None], as_of
    )
    return [
        (deal_id, subject if subject is not None else replayed[deal_id])
        for deal_id, subject in stored
    ]


def _standing(deal_id: UUID, flag: Flag, as_of: datetime) -> FlagRow:
    return FlagRow(deal_id, flag.kind, flag.raised_at, None, flag.severity, flag.numbers, as_of)


async def deal_flags(
    connection: asyncpg.Connection,
    service: DealService,
    rules: FlagRules,
    deal_id: UUID,
    as_of: datetime | None,
) -> list[FlagOnDeal]:
    """The deal's flags: open and cleared (read model), or those standing at `as_of`
    (evaluated on the deal replayed). DealNotFound if there was no such deal."""
    if as_of is not None:
        subject = await subject_as_of(service, deal_id, as_of)
        if not subject.state.exists:
            raise DealNotFound(f"deal {deal_id} did not exist then")
        catalog = await service.catalog_for([subject.state])
        flags = evaluate(subject, as_of, rules, catalog)
        return [FlagOnDeal(_standing(deal_id, flag, as_of), subject.state) for flag in flags]
    stored = await subject_of(connection, deal_id)
    rows = await flags_of(connection, deal_id)
    if stored is None:
        raise DealNotFound(f"deal {deal_id} does not exist")
    return [FlagOnDeal(row, stored.state) for row in rows]


async def standing_flags(
    connection: asyncpg.Connection,
    service: DealService,
    rules: FlagRules,
    as_of: datetime | None,
    where: FlagFilter,
    after: FlagKey,
    limit: int,
) -> list[FlagOnDeal]:
    """Open flags across deals after `after` in key order, at most `limit`: now (read model),
    or standing at `as_of` (stored subjects; deals with events recorded since are replayed)."""
    if as_of is None:
        return await open_flags(connection, where, after, limit)
    found: list[FlagOnDeal] = []
    stored = await subjects_recorded_by(connection, as_of)
    for deal_id, subject in await stored_or_replayed(connection, service, stored, as_of):
        if not subject.state.exists or not where.admits_deal(subject.state):
            continue
        catalog = await service.catalog_for([subject.state])
        found += [
            FlagOnDeal(_standing(deal_id, flag, as_of), subject.state)
            for flag in evaluate(subject, as_of, rules, catalog)
            if where.admits(flag)
        ]
    found = [item for item in found if flag_key(item.flag) > after]
    return sorted(found, key=lambda item: flag_key(item.flag))[:limit]
