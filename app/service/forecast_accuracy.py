"""Forecast accuracy: the weighted forecast for a period as it stood some days before the
period ended (every deal replayed to then), against what was won in it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from app.domain.forecast_accuracy import accuracy, bias, mape
from app.domain.periods import Period
from app.projections.analytics import won_by_owner
from app.service.deals import DealService
from app.service.snapshots import deal_states, forecast_of, open_groups


@dataclass(frozen=True)
class Scored:
    owner: str | None
    """None: the whole team."""
    forecast: Decimal
    won: Decimal
    accuracy: float | None
    bias: float | None


@dataclass(frozen=True)
class PeriodAccuracy:
    period: Period
    snapshot_at: datetime
    overall: Scored
    owners: list[Scored]


@dataclass(frozen=True)
class AccuracyReport:
    periods: list[PeriodAccuracy]
    """The period asked for first, then the ones before it."""
    mape: float | None


def _scored(owner: str | None, forecast: Decimal, won: Decimal) -> Scored:
    forecast = forecast.quantize(Decimal("0.01"))
    return Scored(owner, forecast, won, accuracy(forecast, won), bias(forecast, won))


async def period_accuracy(
    connection: asyncpg.Connection,
    service: DealService,
    period: Period,
    days_before_end: float,
    now: datetime,
    owner: str | None,
) -> PeriodAccuracy:
    snapshot_at = period.end - timedelta(days=days_before_end)
    open_states = await deal_states(connection, service, snapshot_at, status="open")
    rows = forecast_of(
        open_groups(open_states), owner, snapshot_at.date(), await service.catalog_for(open_states)
    )
    forecast: dict[str, Decimal] = defaultdict(Decimal)
    months = set(period.months)
    for row in rows:
        if row.close_month in months and not row.overdue:
            forecast[row.owner] += row.weighted
    won = {
        k: Decimal(format(v, "f"))  # plain notation: 10000, never 1E+4
        for k, v in (await won_by_owner(connection, period.start, period.end, now)).items()
        if owner in (None, k)
    }
    owners = sorted(set(forecast) | set(won))
    return PeriodAccuracy(
        period=period,
        snapshot_at=snapshot_at,
        overall=_scored(owner, sum(forecast.values(), Decimal(0)), sum(won.values(), Decimal(0))),
        owners=[_scored(o, forecast.get(o, Decimal(0)), won.get(o, Decimal(0))) for o in owners],
    )


async def forecast_accuracy(
    connection: asyncpg.Connection,
    service: DealService,
    period: Period,
    days_before_end: float,
    periods: int,
    owner: str | None,
    as_of: datetime | None,
) -> AccuracyReport:
    """`period` and the `periods - 1` before it, each scored, and their MAPE."""
    now = as_of or datetime.now(UTC)
    found = []
    for _ in range(periods):
        found.append(
            await period_accuracy(connection, service, period, days_before_end, now, owner)
        )
        period = period.previous()
    return AccuracyReport(
        periods=found, mape=mape([(p.overall.forecast, p.overall.won) for p in found])
    )
