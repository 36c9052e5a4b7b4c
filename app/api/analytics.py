"""Manager analytics over HTTP: parse the filters, run the read-model queries, shape the
responses (the queries and what they count: app.projections.analytics)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from app.api.auth import require
from app.api.csv_format import CSV_RESPONSE, TableFormat, csv_response, wants_csv
from app.api.deps import (
    MinPosition,
    ReadConnectionDep,
    ServiceDep,
    ServicesDep,
    projected,
)
from app.api.schemas import IsoTime
from app.domain.errors import InvalidRequest
from app.domain.periods import Period
from app.projections import analytics as queries
from app.projections.analytics import Filters, band_labels
from app.projections.blockers import blocker_categories
from app.service import forecast_accuracy as accuracy
from app.service import snapshots

router = APIRouter(
    prefix="/v1/analytics", tags=["analytics"], dependencies=[Depends(require("team"))]
)


async def filters(
    services: ServicesDep,
    service: ServiceDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    pipeline: Annotated[
        str | None, Query(min_length=1, max_length=200, description="A pipeline's key")
    ] = None,
    pipeline_version: Annotated[
        int | None,
        Query(
            ge=1, le=2**31 - 1, description="Only stays lived under this version (with pipeline)"
        ),
    ] = None,
    from_: Annotated[
        IsoTime | None, Query(alias="from", description="Stays entered at or after this")
    ] = None,
    to: Annotated[IsoTime | None, Query(description="Stays entered before this")] = None,
    size_band: Annotated[
        str | None, Query(description="A band label, e.g. 10000-50000 (see /size-bands)")
    ] = None,
) -> Filters:
    bounds: list[int] = services.settings.size_bands
    if size_band is not None and size_band not in [*band_labels(bounds), "unknown"]:
        known = ", ".join([*band_labels(bounds), "unknown"])
        raise InvalidRequest(f"size_band must be one of: {known}")
    if pipeline_version is not None and pipeline is None:
        raise InvalidRequest("pipeline_version needs pipeline: versions are per pipeline")
    if pipeline is None:
        return Filters(owner, pipeline, from_, to, size_band, bounds)
    latest = await service.latest_pipeline(pipeline)
    if latest is None:
        keys = await service.pipeline_keys()
        raise InvalidRequest(f"pipeline must be one of: {', '.join(keys)}", field="pipeline")
    shown = latest
    if pipeline_version is not None:
        if pipeline_version > latest.version:
            raise InvalidRequest(
                f"pipeline {pipeline!r} has versions 1 to {latest.version}",
                field="pipeline_version",
            )
        shown = (await service.catalog_for([])).get(pipeline, pipeline_version)
    return Filters(
        owner, pipeline, from_, to, size_band, bounds, pipeline_version, shown.stage_keys
    )


FiltersDep = Annotated[Filters, Depends(filters)]
READY = [Depends(projected("stage_intervals", "deals", "blockers"))]
Model = TypeVar("Model", bound=BaseModel)


def _all(model: type[Model], found: Sequence[object]) -> list[Model]:
    """Each query result as the response model of the same fields."""
    return [model.model_validate(item, from_attributes=True) for item in found]


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
async def time_in_stage(connection: ReadConnectionDep, f: FiltersDep) -> TimeInStage:
    found = await queries.durations_by(connection, f, (None, "owner", "size_band"))
    return TimeInStage(
        overall=_all(Durations, found[None]),
        by_owner=_all(Durations, found["owner"]),
        by_size_band=_all(Durations, found["size_band"]),
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


CsvFormat = Annotated[TableFormat | None, Query(description="csv: rows as a spreadsheet")]


def _table(request: Request, format: str | None, rows: Sequence[BaseModel]) -> Any:
    """`rows` as CSV when asked for (?format=csv or Accept: text/csv), else as they are."""
    if wants_csv(request, format):
        return csv_response([row.model_dump(mode="json") for row in rows])
    return rows


@router.get(
    "/conversion",
    summary="Per stage: deals entered, how their last stay there ended, conversion rates",
    dependencies=READY,
    responses=CSV_RESPONSE,
)
async def conversion(
    request: Request, connection: ReadConnectionDep, f: FiltersDep, format: CsvFormat = None
) -> list[StageConversion]:
    rows = _all(StageConversion, await queries.conversion(connection, f))
    return _table(request, format, rows)  # type: ignore[no-any-return]


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
async def velocity(connection: ReadConnectionDep, f: FiltersDep) -> list[WeekPoint]:
    return _all(WeekPoint, await queries.velocity(connection, f))


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
    responses=CSV_RESPONSE,
)
async def regressions(
    request: Request, connection: ReadConnectionDep, f: FiltersDep, format: CsvFormat = None
) -> list[StageRegressions]:
    rows = _all(StageRegressions, await queries.regressions(connection, f))
    return _table(request, format, rows)  # type: ignore[no-any-return]


class Disqualifications(BaseModel):
    total: int
    by_reason: dict[str, int]
    by_stage: dict[str, int]


@router.get(
    "/disqualifications", summary="Disqualified deals by reason and stage", dependencies=READY
)
async def disqualifications(connection: ReadConnectionDep, f: FiltersDep) -> Disqualifications:
    found = await queries.disqualifications(connection, f)
    return Disqualifications.model_validate(found, from_attributes=True)


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
async def blockers(connection: ReadConnectionDep, f: FiltersDep) -> list[BlockerCategory]:
    return _all(BlockerCategory, await blocker_categories(connection, f))


class ForecastRow(BaseModel):
    close_month: str | None
    owner: str
    currency: str | None
    deals: int
    amount: Decimal
    weighted: Decimal
    """Amount x the stage's probability, summed (0 for overdue rows)."""
    overdue: bool
    """close_month is "overdue": the deals' close month has passed while they are open."""


class Forecast(BaseModel):
    as_of: datetime | None
    total_weighted: dict[str, Decimal]
    """Per currency; overdue deals are not in it."""
    overdue_amount: dict[str, Decimal]
    """Open amounts whose close month has passed, per currency: to re-date or close."""
    rows: list[ForecastRow]


@router.get(
    "/forecast",
    summary="Open pipeline weighted by stage probability, per close month and owner",
    dependencies=[Depends(projected("deals"))],
)
async def forecast(
    connection: ReadConnectionDep,
    service: ServiceDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    as_of: Annotated[
        IsoTime | None,
        Query(description="The forecast as it stood then (replays every deal; slow on big logs)."),
    ] = None,
    min_position: MinPosition = None,
) -> Forecast:
    found = await snapshots.forecast(connection, service, as_of, owner=owner)
    return Forecast(
        as_of=as_of,
        total_weighted=found.total_weighted,
        overdue_amount=found.overdue_amount,
        rows=_all(ForecastRow, found.rows),
    )


class OverrideCount(BaseModel):
    manager: str
    """The overriding API key's id."""
    manager_name: str | None
    manager_role: str | None
    stage: str
    overrides: int
    share_of_forward_moves: float


@router.get(
    "/overrides",
    summary="Forward moves made on a manager's override instead of evidence, by manager/stage",
    dependencies=READY,
)
async def overrides(connection: ReadConnectionDep, f: FiltersDep) -> list[OverrideCount]:
    return _all(OverrideCount, await queries.overrides(connection, f))


@router.get("/size-bands", summary="The deal-size bands analytics group by (configurable)")
async def size_bands(services: ServicesDep) -> list[str]:
    return [*band_labels(services.settings.size_bands), "unknown"]


class ScoredOut(BaseModel):
    owner: str | None
    """None: the whole team (or the owner filtered on)."""
    forecast: Decimal
    """The weighted forecast for the period at the snapshot."""
    won: Decimal
    """The amount actually won in the period."""
    accuracy: float | None
    """1 - |F - A| / A (None: nothing won)."""
    bias: float | None
    """(F - A) / A: positive when the forecast promised more than was won."""


class PeriodAccuracyOut(BaseModel):
    period: str
    snapshot_at: datetime
    overall: ScoredOut
    owners: list[ScoredOut]


class ForecastAccuracy(BaseModel):
    periods: list[PeriodAccuracyOut]
    """The period asked for first, then the ones before it."""
    mape: float | None
    """Mean absolute percentage error of the overall forecasts across those periods."""


@router.get(
    "/forecast-accuracy",
    summary="The forecast as it stood before a period ended against what was won: accuracy,"
    " bias, MAPE",
    dependencies=READY,
)
async def forecast_accuracy(
    connection: ReadConnectionDep,
    service: ServiceDep,
    period: Annotated[str, Query(max_length=7, description='"2026-Q3" or "2026-09"')],
    snapshot_days_before_end: Annotated[float, Query(ge=0, le=3650)] = 45,
    periods: Annotated[int, Query(ge=1, le=12, description="Score this many periods")] = 1,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    as_of: Annotated[IsoTime | None, Query(description="Count wins recorded by then")] = None,
    min_position: MinPosition = None,
) -> ForecastAccuracy:
    report = await accuracy.forecast_accuracy(
        connection,
        service,
        Period.parse(period),
        snapshot_days_before_end,
        periods,
        owner,
        as_of,
    )
    return ForecastAccuracy(
        periods=[
            PeriodAccuracyOut(
                period=p.period.label,
                snapshot_at=p.snapshot_at,
                overall=ScoredOut.model_validate(p.overall, from_attributes=True),
                owners=[ScoredOut.model_validate(o, from_attributes=True) for o in p.owners],
            )
            for p in report.periods
        ],
        mape=report.mape,
    )
