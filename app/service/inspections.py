"""The manager's inspection reports: the weekly deal review (what moved, stalled or is
flagged, with coaching questions), built from the flag subjects read model and, for the
deals it lists, their streams up to the time asked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from app.db import Connect, side_by_side
from app.domain.calibration import Calibration, Stay, calibrate
from app.domain.coaching import CoachingRules, Question, last_contact, questions_for
from app.domain.errors import InvalidRequest
from app.domain.flags import TIMED, Flag, FlagRules, Subject, evaluate
from app.domain.periods import Period
from app.domain.pipeline import ACTIVE, Pipeline
from app.domain.state import DealState, pipelines_named
from app.events.recorded import histories_through
from app.projections.analytics import (
    Durations,
    Filters,
    StageConversion,
    StageRegressions,
    closed_stays,
    conversion,
    durations,
    regressions,
)
from app.projections.blockers import BlockerCategory, blocker_categories
from app.projections.flags import (
    Listed,
    open_subjects_by,
    subjects_of,
    weekly_listing,
    weekly_unsure,
)
from app.service.deals import DealService
from app.service.snapshots import stored_or_replayed, subjects_then

WEEK = timedelta(days=7)
STALLED = frozenset({"slow_in_stage", "inactive", "ghosting", "stuck_blocker"})


@dataclass(frozen=True)
class Change:
    version: int
    type: str
    recorded_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class DealReview:
    state: DealState
    why: list[str]
    """moved (changed stage this week), stalled (a stall flag stands), flagged."""
    changes: list[Change]
    flags: list[Flag]
    questions: list[Question]


@dataclass(frozen=True)
class WeeklyReport:
    as_of: datetime
    since: datetime
    owner: str | None
    deals: list[DealReview]
    total: int
    """Deals that moved, stalled or are flagged, across every page."""


async def _subjects(
    connection: asyncpg.Connection, service: DealService, as_of: datetime, owner: str | None
) -> list[Subject]:
    found = []
    stored = await open_subjects_by(connection, as_of, owner)
    for _, subject in await stored_or_replayed(connection, service, stored, as_of):
        state = subject.state
        if state.exists and state.status == ACTIVE and owner in (None, state.owner):
            found.append(subject)
    return found


async def weekly(
    connection: asyncpg.Connection,
    service: DealService,
    flag_rules: FlagRules,
    *,
    as_of: datetime | None,
    owner: str | None,
    start: int = 0,
    limit: int | None = None,
    coaching: CoachingRules | None = None,
    connect: Connect | None = None,
) -> WeeklyReport:
    """The open deals of `owner` (None: the team) that moved, stalled or are flagged in the
    week before `as_of` (default now), from the `start`th on, at most `limit`: each with its
    week's changes, flags and coaching questions. `connect`: another connection, for the
    listing as of now to run beside the judging of the deals it cannot place."""
    at = as_of or datetime.now(UTC)
    since = at - WEEK
    if as_of is None:
        return await _weekly_now(
            connection, service, flag_rules, at, owner, start, limit, coaching, connect
        )
    subjects = await _subjects(connection, service, at, owner)
    catalog = await service.catalog_for([s.state for s in subjects])
    listed: list[tuple[Subject, list[Flag], list[str]]] = []
    for subject in sorted(subjects, key=lambda s: (s.state.owner, s.state.name, s.state.deal_id)):
        state = subject.state
        flags = evaluate(subject, at, flag_rules, catalog)
        why = _why(state, flags, since, at)
        if why:
            listed.append((subject, flags, why))
    stop = len(listed) if limit is None else start + limit
    reviews = await _reviews(connection, service, listed[start:stop], since, at, coaching)
    return WeeklyReport(as_of=at, since=since, owner=owner, deals=reviews, total=len(listed))


def _why(state: DealState, flags: list[Flag], since: datetime, at: datetime) -> list[str]:
    moved = state.stage_entered_at is not None and since < state.stage_entered_at <= at
    return [
        reason
        for reason, yes in (
            ("moved", moved),
            ("stalled", any(f.kind in STALLED for f in flags)),
            ("flagged", bool(flags)),
        )
        if yes
    ]


async def _weekly_now(
    connection: asyncpg.Connection,
    service: DealService,
    flag_rules: FlagRules,
    at: datetime,
    owner: str | None,
    start: int,
    limit: int | None,
    coaching: CoachingRules | None,
    connect: Connect | None,
) -> WeeklyReport:
    """The review as of now, listed in SQL: a deal with an open flag in the read model is
    flagged now too (time never clears a flag, events do, and the read model has them all),
    and one that changed stage in the week moved. Only deals time may have flagged since the
    sweep last judged them are judged here (for the kinds time raises: any other would
    stand in the read model already), beside the listing, and merged into it; then the
    page's deals in full."""
    since = at - WEEK
    # Every read sees one snapshot: a deal whose event was projected between the first two
    # would be neither unsure in the first nor listed in the second (it leaves "later" out).
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await connection.fetchval("SELECT pg_export_snapshot()")
        unsure = await weekly_unsure(connection, owner, since, at)
        # The judged deals are not in the listing; at most len(unsure) of them come before the
        # page, so the listing is read from that many places earlier.
        offset = max(0, start - len(unsure))
        size = None if limit is None else start + limit - offset
        replayed: dict[UUID, Subject] = {}
        flags_of: dict[UUID, list[Flag]] = {}

        async def judged(own: asyncpg.Connection) -> list[Subject]:
            """The unsure deals in the review, replayed to `at` (written since) or judged."""
            # Written since `at`: replayed to then, kept if open.
            since_at = [deal_id for deal_id, later in unsure if later]
            for deal_id, subject in (await subjects_then(own, service, since_at, at)).items():
                state = subject.state
                if state.exists and state.status == ACTIVE and owner in (None, state.owner):
                    replayed[deal_id] = subject
            due = await subjects_of(own, [d for d, later in unsure if not later], timed=True)
            judging = (*replayed.values(), *due.values())
            catalog = await service.catalog_for([s.state for s in judging])
            flags_of.update({d: evaluate(s, at, flag_rules, catalog) for d, s in replayed.items()})
            raised = [s for d, s in replayed.items() if flags_of[d] or _why(s.state, [], since, at)]
            return raised + [
                s for s in due.values() if evaluate(s, at, flag_rules, catalog, kinds=TIMED)
            ]

        async def listing(other: asyncpg.Connection) -> tuple[list[Listed], int]:
            ids = [deal_id for deal_id, _ in unsure]
            if other is connection:  # no spare connection: in the same transaction
                return await weekly_listing(other, owner, since, at, ids, offset, size)
            async with other.transaction(isolation="repeatable_read", readonly=True):
                await other.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                return await weekly_listing(other, owner, since, at, ids, offset, size)

        raised, (listed, counted) = await side_by_side(connection, connect, judged, listing)
        wanted = merged_page(listed, offset, [_place(s.state) for s in raised], start, limit)
        page = await subjects_of(connection, [d for d in wanted if d not in replayed])
        catalog = await service.catalog_for([s.state for s in page.values()])
        flags_of.update({d: evaluate(s, at, flag_rules, catalog) for d, s in page.items()})
        page.update({d: replayed[d] for d in wanted if d in replayed})
        chosen = []
        for deal_id in wanted:
            subject, flags = page[deal_id], flags_of[deal_id]
            chosen.append((subject, flags, _why(subject.state, flags, since, at)))
        reviews = await _reviews(connection, service, chosen, since, at, coaching)
    total = counted + len(raised)
    return WeeklyReport(as_of=at, since=since, owner=owner, deals=reviews, total=total)


def _place(state: DealState) -> Listed:
    return (state.owner, state.name, state.deal_id)


def merged_page(
    listed: list[Listed], offset: int, raised: list[Listed], start: int, limit: int | None
) -> list[UUID]:
    """The ids from the `start`th on (at most `limit`) of the listing merged with `raised`
    (deals not in it), given the listing from its `offset`th place on, `offset` at most
    `start - len(raised)`: a raised deal before `listed[0]` is then before the page."""
    if offset == 0:
        merged, begin = sorted([*listed, *raised]), start
    elif not listed:
        return []  # the listing ends before `offset`: so does the merge before `start`
    else:
        ahead = sum(1 for r in raised if r < listed[0])
        merged = sorted([*listed, *(r for r in raised if r >= listed[0])])
        begin = start - offset - ahead
    end = None if limit is None else begin + limit
    return [deal_id for _, _, deal_id in merged[begin:end]]


async def _reviews(
    connection: asyncpg.Connection,
    service: DealService,
    chosen: list[tuple[Subject, list[Flag], list[str]]],
    since: datetime,
    at: datetime,
    coaching: CoachingRules | None,
) -> list[DealReview]:
    """Each chosen deal's review: its week's events and coaching questions, read from its
    stream on `connection` (a read replica's, where one serves reads) up to the version its
    subject has and to `at` (only the page's deals are read from the log, in one query)."""
    through = {subject.state.deal_id: subject.state.version for subject, _, _ in chosen}
    histories = await histories_through(connection, through, at)
    reviews = []
    for subject, flags, why in chosen:
        state = subject.state
        stored = histories.get(state.deal_id, [])
        history = [e.recorded for e in stored]
        pipeline = state.pipeline_in(await service.catalog_holding(pipelines_named(history)))
        changes = [
            Change(e.recorded.version, e.type, e.recorded.recorded_at, json.loads(e.data))
            for e in stored
            if since < e.recorded.recorded_at <= at
        ]
        questions = questions_for(state, pipeline, at, last_contact(history, state), coaching)
        reviews.append(DealReview(state, why, changes, flags, questions))
    return reviews


@dataclass(frozen=True)
class QuarterlyReport:
    period: Period
    as_of: datetime
    pipeline: Pipeline
    calibration: Calibration


async def quarterly(
    connection: asyncpg.Connection,
    service: DealService,
    *,
    as_of: datetime | None,
    owner: str | None,
    pipeline_key: str,
    period: Period | None,
) -> QuarterlyReport:
    """Calibration of `pipeline_key`'s latest version over the deals closed in the quarter
    (default: the quarter of `as_of`), counting what was recorded by `as_of`."""
    at = as_of or datetime.now(UTC)
    period = period or Period.quarter_of(at.date())
    pipeline = await service.latest_pipeline(pipeline_key)
    if pipeline is None:
        keys = await service.pipeline_keys()
        raise InvalidRequest(f"pipeline must be one of: {', '.join(keys)}", field="pipeline")
    rows = await closed_stays(connection, pipeline_key, owner, period.start, period.end, at)
    stays = [Stay(deal_id, stage, won, days) for deal_id, stage, won, days in rows]
    return QuarterlyReport(period, at, pipeline, calibrate(stays, pipeline))


@dataclass(frozen=True)
class MonthStage:
    stage: str
    expected_days: int | None
    this_month: StageConversion | None
    previous_month: StageConversion | None
    this_month_median_days: float | None
    previous_month_median_days: float | None


@dataclass(frozen=True)
class MonthlyReport:
    period: Period
    previous: Period
    stages: list[MonthStage]
    regressions_by_trigger: dict[str, int]
    blockers: list[BlockerCategory]


_Month = tuple[list[StageConversion], list[Durations]]
"""A month's conversion and durations."""


async def monthly(
    connection: asyncpg.Connection,
    service: DealService,
    *,
    as_of: datetime | None,
    owner: str | None,
    pipeline_key: str,
    size_bands: list[int],
    connect: Connect | None = None,
) -> MonthlyReport:
    """Stage conversion and time in stage for stays begun in `as_of`'s month against the
    month before and the pipeline's expected days; regressions by trigger; blockers.
    `connect`: another connection, for the month before to be read beside this one."""
    at = as_of or datetime.now(UTC)
    period = Period.month(at.year, at.month)
    previous = period.previous()
    pipeline = await service.latest_pipeline(pipeline_key)
    if pipeline is None:
        keys = await service.pipeline_keys()
        raise InvalidRequest(f"pipeline must be one of: {', '.join(keys)}", field="pipeline")

    def window(p: Period) -> Filters:
        return Filters(
            owner,
            pipeline_key,
            p.start,
            min(p.end, at),
            None,
            size_bands,
            stage_keys=pipeline.stage_keys,
        )

    now_f, before_f = window(period), window(previous)

    async def month(own: asyncpg.Connection, f: Filters) -> _Month:
        return await conversion(own, f), await durations(own, f, None)

    async def this_month(
        own: asyncpg.Connection,
    ) -> tuple[_Month, list[StageRegressions], list[BlockerCategory]]:
        found = await month(own, now_f)
        return found, await regressions(own, now_f), await blocker_categories(own, now_f)

    async def month_before(other: asyncpg.Connection) -> _Month:
        return await month(other, before_f)

    ((conv_now, med_now), regressed, blocked), (conv_then, med_then) = await side_by_side(
        connection, connect, this_month, month_before
    )
    conv = {c.stage: c for c in conv_now}
    conv_before = {c.stage: c for c in conv_then}
    med = {d.stage: d.median_days for d in med_now}
    med_before = {d.stage: d.median_days for d in med_then}
    triggers: dict[str, int] = {}
    for row in regressed:
        for trigger, n in row.by_trigger.items():
            triggers[trigger] = triggers.get(trigger, 0) + n
    stages = [
        MonthStage(
            stage=s.key,
            expected_days=s.expected_days,
            this_month=conv.get(s.key),
            previous_month=conv_before.get(s.key),
            this_month_median_days=med.get(s.key),
            previous_month_median_days=med_before.get(s.key),
        )
        for s in pipeline.stages
    ]
    return MonthlyReport(
        period=period,
        previous=previous,
        stages=stages,
        regressions_by_trigger=dict(sorted(triggers.items())),
        blockers=blocked,
    )
