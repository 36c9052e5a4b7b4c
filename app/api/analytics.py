"""Manager analytics: queries over the read models (stage_intervals, deals, blocker_log).

Stays are filtered by the deal's owner, pipeline and size band while in the stage, and by
when the stay began (`from` <= entered_at < `to`). Durations are in days, from the recorded
times of the stage changes; only finished stays count toward time-in-stage.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from app.api.auth import require
from app.api.deps import MinPosition, ServiceDep, deal_states, get_services, projected
from app.api.schemas import IsoTime
from app.db import driver_connection
from app.domain.pipeline import PIPELINES
from app.domain.state import DealState

router = APIRouter(
    prefix="/v1/analytics", tags=["analytics"], dependencies=[Depends(require("team"))]
)
DAYS = "(extract(epoch FROM left_at - entered_at) / 86400.0)"


def band_labels(bounds: list[int]) -> list[str]:
    edges = sorted(bounds)
    labels = [f"<{edges[0]}"] if edges else []
    labels += [f"{a}-{b}" for a, b in itertools.pairwise(edges)]
    labels += [f"{edges[-1]}+"] if edges else ["all"]
    return labels


def band_of(amount: Decimal | None, bounds: list[int]) -> str:
    if amount is None:
        return "unknown"
    edges = sorted(bounds)
    labels = band_labels(edges)
    for edge, label in zip(edges, labels, strict=False):
        if amount < edge:
            return label
    return labels[-1]


def _band_sql(bounds: list[int]) -> str:
    edges = sorted(bounds)
    labels = band_labels(edges)
    cases = " ".join(
        f"WHEN amount < {edge} THEN '{label}'" for edge, label in zip(edges, labels, strict=False)
    )
    return f"(CASE WHEN amount IS NULL THEN 'unknown' {cases} ELSE '{labels[-1]}' END)"


@dataclass(frozen=True)
class Filters:
    owner: str | None
    pipeline: str | None
    start: datetime | None
    end: datetime | None
    size_band: str | None
    band_sql: str

    def where(self, first: int = 1) -> tuple[str, list[Any]]:
        """A WHERE clause over stage_intervals, with its arguments from $first on."""
        n = first
        sql = (
            f"($%d::text IS NULL OR owner = $%d) AND ($%d::text IS NULL OR pipeline = $%d)"
            f" AND ($%d::timestamptz IS NULL OR entered_at >= $%d)"
            f" AND ($%d::timestamptz IS NULL OR entered_at < $%d)"
            f" AND ($%d::text IS NULL OR {self.band_sql} = $%d)"
        ) % (n, n, n + 1, n + 1, n + 2, n + 2, n + 3, n + 3, n + 4, n + 4)
        return sql, [self.owner, self.pipeline, self.start, self.end, self.size_band]


def filters(
    request: Request,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    pipeline: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    from_: Annotated[
        IsoTime | None, Query(alias="from", description="Stays entered at or after this")
    ] = None,
    to: Annotated[IsoTime | None, Query(description="Stays entered before this")] = None,
    size_band: Annotated[
        str | None, Query(description="A band label, e.g. 10000-50000 (see /size-bands)")
    ] = None,
) -> Filters:
    bounds: list[int] = get_services(request).settings.size_bands
    if size_band is not None and size_band not in [*band_labels(bounds), "unknown"]:
        known = ", ".join([*band_labels(bounds), "unknown"])
        raise HTTPException(422, f"size_band must be one of: {known}")
    if pipeline is not None and pipeline not in PIPELINES:
        raise HTTPException(422, f"pipeline must be one of: {', '.join(PIPELINES)}")
    return Filters(owner, pipeline, from_, to, size_band, _band_sql(bounds))


FiltersDep = Annotated[Filters, Depends(filters)]
READY = [Depends(projected("stage_intervals", "deals", "blockers"))]


async def _fetch(request: Request, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with driver_connection(get_services(request).engine) as connection:
        return list(await connection.fetch(sql, *args))


class Durations(BaseModel):
    stage: str
    group: str | None
    count: int
    mean_days: float
    median_days: float
    p90_days: float


class TimeInStage(BaseModel):
    overall: list[Durations]
    by_owner: list[Durations]
    by_size_band: list[Durations]


@router.get(
    "/time-in-stage", summary="Days per stage: count, mean, median, p90", dependencies=READY
)
async def time_in_stage(request: Request, f: FiltersDep) -> TimeInStage:
    where, args = f.where()

    async def grouped(group_sql: str) -> list[Durations]:
        rows = await _fetch(
            request,
            f"SELECT stage, {group_sql} AS grp, count(*) AS n, avg({DAYS}) AS mean,"
            f" percentile_cont(0.5) WITHIN GROUP (ORDER BY {DAYS}) AS median,"
            f" percentile_cont(0.9) WITHIN GROUP (ORDER BY {DAYS}) AS p90"
            f" FROM stage_intervals WHERE left_at IS NOT NULL AND {where}"
            f" GROUP BY stage, grp ORDER BY stage, grp",
            *args,
        )
        return [
            Durations(
                stage=r["stage"],
                group=r["grp"],
                count=r["n"],
                mean_days=round(float(r["mean"]), 4),
                median_days=round(float(r["median"]), 4),
                p90_days=round(float(r["p90"]), 4),
            )
            for r in rows
        ]

    return TimeInStage(
        overall=await grouped("NULL::text"),
        by_owner=await grouped("owner"),
        by_size_band=await grouped(f.band_sql),
    )


class StageConversion(BaseModel):
    stage: str
    entered: int
    """Deals that entered the stage (each counted once)."""
    moved_forward: int
    regressed: int
    disqualified: int
    nurtured: int
    still_there: int
    won: int
    """Of the deals that entered, how many were won later."""
    to_next_rate: float | None
    to_won_rate: float | None


@router.get(
    "/conversion",
    summary="Per stage: deals entered, how their last stay there ended, conversion rates",
    dependencies=READY,
)
async def conversion(request: Request, f: FiltersDep) -> list[StageConversion]:
    where, args = f.where()
    rows = await _fetch(
        request,
        "WITH stays AS (SELECT * FROM stage_intervals WHERE " + where + "),"
        " last_stay AS (SELECT DISTINCT ON (deal_id, stage) deal_id, stage, left_how"
        "   FROM stays ORDER BY deal_id, stage, seq DESC),"
        " won AS (SELECT DISTINCT deal_id FROM stage_intervals WHERE left_how = 'won')"
        " SELECT stage, count(*) AS entered,"
        " count(*) FILTER (WHERE left_how IN ('advanced', 'won')) AS forward,"
        " count(*) FILTER (WHERE left_how = 'regressed') AS regressed,"
        " count(*) FILTER (WHERE left_how = 'disqualified') AS disqualified,"
        " count(*) FILTER (WHERE left_how IN ('nurtured', 'reactivated')) AS nurtured,"
        " count(*) FILTER (WHERE left_how IS NULL) AS still,"
        " count(*) FILTER (WHERE won.deal_id IS NOT NULL) AS won"
        " FROM last_stay LEFT JOIN won USING (deal_id) GROUP BY stage",
        *args,
    )
    by_stage = {r["stage"]: r for r in rows}
    order = [*PIPELINES[f.pipeline or "default"].stage_keys, "nurture"]
    out = []
    for stage in [s for s in order if s in by_stage] + sorted(set(by_stage) - set(order)):
        r = by_stage[stage]
        entered = r["entered"]
        out.append(
            StageConversion(
                stage=stage,
                entered=entered,
                moved_forward=r["forward"],
                regressed=r["regressed"],
                disqualified=r["disqualified"],
                nurtured=r["nurtured"],
                still_there=r["still"],
                won=r["won"],
                to_next_rate=round(r["forward"] / entered, 4) if entered else None,
                to_won_rate=round(r["won"] / entered, 4) if entered else None,
            )
        )
    return out


class WeekPoint(BaseModel):
    week: date
    stage: str
    median_days: float
    stays_finished: int
    advanced: int


@router.get(
    "/velocity",
    summary="Weekly: median days of the stays finished that week, and advances, per stage",
    dependencies=READY,
)
async def velocity(request: Request, f: FiltersDep) -> list[WeekPoint]:
    where, args = f.where()
    rows = await _fetch(
        request,
        f"SELECT (date_trunc('week', left_at AT TIME ZONE 'UTC'))::date AS week, stage,"
        f" percentile_cont(0.5) WITHIN GROUP (ORDER BY {DAYS}) AS median, count(*) AS n,"
        f" count(*) FILTER (WHERE left_how IN ('advanced', 'won')) AS advanced"
        f" FROM stage_intervals WHERE left_at IS NOT NULL AND {where}"
        f" GROUP BY week, stage ORDER BY week, stage",
        *args,
    )
    return [
        WeekPoint(
            week=r["week"],
            stage=r["stage"],
            median_days=round(float(r["median"]), 4),
            stays_finished=r["n"],
            advanced=r["advanced"],
        )
        for r in rows
    ]


class StageRegressions(BaseModel):
    stage: str
    stays_finished: int
    regressed: int
    rate: float | None
    by_trigger: dict[str, int]


@router.get(
    "/regressions",
    summary="Per stage: how often stays ended in a regression, and why",
    dependencies=READY,
)
async def regressions(request: Request, f: FiltersDep) -> list[StageRegressions]:
    where, args = f.where()
    rows = await _fetch(
        request,
        "SELECT stage, left_how, left_reason, count(*) AS n FROM stage_intervals"
        " WHERE left_at IS NOT NULL AND " + where + " GROUP BY stage, left_how, left_reason",
        *args,
    )
    finished: dict[str, int] = defaultdict(int)
    triggers: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        finished[r["stage"]] += r["n"]
        if r["left_how"] == "regressed":
            triggers[r["stage"]][r["left_reason"]] = r["n"]
    return [
        StageRegressions(
            stage=stage,
            stays_finished=total,
            regressed=sum(triggers[stage].values()),
            rate=round(sum(triggers[stage].values()) / total, 4),
            by_trigger=dict(sorted(triggers[stage].items())),
        )
        for stage, total in sorted(finished.items())
    ]


class Disqualifications(BaseModel):
    total: int
    by_reason: dict[str, int]
    by_stage: dict[str, int]


@router.get(
    "/disqualifications", summary="Disqualified deals by reason and stage", dependencies=READY
)
async def disqualifications(request: Request, f: FiltersDep) -> Disqualifications:
    where, args = f.where()
    rows = await _fetch(
        request,
        "SELECT stage, left_reason, count(*) AS n FROM stage_intervals"
        " WHERE left_how = 'disqualified' AND " + where + " GROUP BY stage, left_reason",
        *args,
    )
    by_reason: dict[str, int] = defaultdict(int)
    by_stage: dict[str, int] = defaultdict(int)
    for r in rows:
        by_reason[r["left_reason"]] += r["n"]
        by_stage[r["stage"]] += r["n"]
    return Disqualifications(
        total=sum(by_reason.values()),
        by_reason=dict(sorted(by_reason.items())),
        by_stage=dict(sorted(by_stage.items())),
    )


class BlockerCategory(BaseModel):
    category: str
    open: int
    resolved: int
    median_days_to_resolve: float | None


@router.get(
    "/blockers",
    summary="Blockers by category: open, resolved, median days to resolve",
    dependencies=READY,
)
async def blockers(request: Request, f: FiltersDep) -> list[BlockerCategory]:
    rows = await _fetch(
        request,
        "SELECT b.category, count(*) FILTER (WHERE b.resolved_at IS NULL) AS open,"
        " count(*) FILTER (WHERE b.resolved_at IS NOT NULL) AS resolved,"
        " percentile_cont(0.5) WITHIN GROUP"
        "  (ORDER BY extract(epoch FROM b.resolved_at - b.raised_at) / 86400.0) AS median"
        " FROM blocker_log b JOIN deals d USING (deal_id)"
        " WHERE ($1::text IS NULL OR d.owner = $1)"
        " AND ($2::text IS NULL OR d.state->>'pipeline_key' = $2)"
        " AND ($3::timestamptz IS NULL OR b.raised_at >= $3)"
        " AND ($4::timestamptz IS NULL OR b.raised_at < $4)"
        " GROUP BY b.category ORDER BY b.category",
        f.owner,
        f.pipeline,
        f.start,
        f.end,
    )
    return [
        BlockerCategory(
            category=r["category"],
            open=r["open"],
            resolved=r["resolved"],
            median_days_to_resolve=round(float(r["median"]), 4) if r["median"] else None,
        )
        for r in rows
    ]


class ForecastRow(BaseModel):
    close_month: str | None
    owner: str
    currency: str | None
    deals: int
    amount: Decimal
    weighted: Decimal
    """Amount x the stage's probability, summed."""


class Forecast(BaseModel):
    as_of: datetime | None
    total_weighted: dict[str, Decimal]
    rows: list[ForecastRow]


def forecast_of(states: list[DealState], owner: str | None) -> list[ForecastRow]:
    sums: dict[tuple[str | None, str, str | None], list[Any]] = {}
    for state in states:
        if state.status != "open" or state.amount is None:
            continue
        if owner is not None and state.owner != owner:
            continue
        probability = Decimal(str(state.pipeline.stage(state.stage).probability))
        month = state.close_date.strftime("%Y-%m") if state.close_date else None
        entry = sums.setdefault((month, state.owner, state.currency), [0, Decimal(0), Decimal(0)])
        entry[0] += 1
        entry[1] += state.amount
        entry[2] += state.amount * probability
    return [
        ForecastRow(
            close_month=month,
            owner=who,
            currency=currency,
            deals=n,
            amount=amount,
            weighted=weighted.quantize(Decimal("0.01")),
        )
        for (month, who, currency), (n, amount, weighted) in sorted(
            sums.items(), key=lambda item: (item[0][0] or "", item[0][1], item[0][2] or "")
        )
    ]


@router.get(
    "/forecast",
    summary="Open pipeline weighted by stage probability, per close month and owner",
    dependencies=[Depends(projected("deals"))],
)
async def forecast(
    request: Request,
    service: ServiceDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    as_of: Annotated[
        IsoTime | None,
        Query(description="The forecast as it stood then (replays every deal; slow on big logs)."),
    ] = None,
    min_position: MinPosition = None,
) -> Forecast:
    states = await deal_states(get_services(request), service, as_of, owner=owner, status="open")
    rows = forecast_of(states, owner)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        totals[row.currency or ""] += row.weighted
    return Forecast(as_of=as_of, total_weighted=dict(totals), rows=rows)


class OverrideCount(BaseModel):
    manager: str
    stage: str
    overrides: int
    share_of_forward_moves: float


@router.get(
    "/overrides",
    summary="Forward moves made on a manager's override instead of evidence, by manager/stage",
    dependencies=READY,
)
async def overrides(request: Request, f: FiltersDep) -> list[OverrideCount]:
    where, args = f.where()
    rows = await _fetch(
        request,
        "WITH forward AS (SELECT stage, left_override_by FROM stage_intervals"
        " WHERE left_how IN ('advanced', 'won') AND " + where + "),"
        " totals AS (SELECT stage, count(*) AS n FROM forward GROUP BY stage)"
        " SELECT f.left_override_by AS manager, f.stage, count(*) AS n, t.n AS total"
        " FROM forward f JOIN totals t USING (stage) WHERE f.left_override_by IS NOT NULL"
        " GROUP BY f.left_override_by, f.stage, t.n ORDER BY manager, stage",
        *args,
    )
    return [
        OverrideCount(
            manager=r["manager"],
            stage=r["stage"],
            overrides=r["n"],
            share_of_forward_moves=round(r["n"] / r["total"], 4),
        )
        for r in rows
    ]


@router.get("/size-bands", summary="The deal-size bands analytics group by (configurable)")
async def size_bands(request: Request) -> list[str]:
    return [*band_labels(get_services(request).settings.size_bands), "unknown"]
