"""Pipeline health now (read models) or as it stood at a past time (deals replayed)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from app.domain.periods import Period
from app.domain.pipeline_facts import DealFacts, facts_of, is_open
from app.domain.pipeline_health import Health, HealthFigures, HealthRules, assess, stage_limits
from app.projections.pipeline_health import (
    closed_history,
    created_value,
    deal_facts,
    health_figures,
)
from app.projections.targets import Target, targets_for
from app.service.deals import DealService
from app.service.snapshots import deal_states


@dataclass(frozen=True)
class HealthReport:
    as_of: datetime
    period: Period
    targets: list[Target]
    health: Health
    dead_leads: list[DealFacts]
    """The first of the dead leads (as many as deal ids listed per finding)."""


async def _figures(
    connection: asyncpg.Connection,
    service: DealService,
    rules: HealthRules,
    as_of: datetime | None,
    at: datetime,
    period: Period,
    listed: int,
    owner: str | None,
    pipeline: str | None,
) -> tuple[HealthFigures, Decimal, list[DealFacts]]:
    """The open deals' figures, the value opened in the creation window before `at`, and
    the dead leads listed."""
    window = timedelta(days=rules.creation_window_days)
    if as_of is None:
        # Every version of every pipeline: which of them open deals follow is only known
        # once the figures are summed.
        catalog = await service.every_pipeline_version()
        versions = [(key, v) for key in catalog.keys for v in range(1, catalog.newest(key) + 1)]
        limits = stage_limits(catalog, versions, rules)
        figures = await health_figures(
            connection, at, limits, rules, period, listed, owner=owner, pipeline=pipeline
        )
        created = await created_value(connection, at - window, at, owner, pipeline)
        return figures, created, await deal_facts(connection, figures.dead.ids)
    states = [
        s
        for s in await deal_states(connection, service, as_of)
        if (owner is None or s.owner == owner) and (pipeline is None or s.pipeline_key == pipeline)
    ]
    every = [facts_of(s) for s in states]
    created = sum((f.value for f in every if at - window < f.opened_at <= at), Decimal(0))
    given = [facts_of(s) for s in states if is_open(s)]
    followed = {(f.pipeline_key, f.pipeline_version) for f in given}
    limits = stage_limits(await service.catalog_holding(followed), followed, rules)
    figures = await health_figures(connection, at, limits, rules, period, listed, given=given)
    by_id = {f.deal_id: f for f in given}
    return figures, created, [by_id[i] for i in figures.dead.ids]


async def pipeline_health(
    connection: asyncpg.Connection,
    service: DealService,
    rules: HealthRules,
    *,
    as_of: datetime | None,
    owner: str | None,
    pipeline: str | None,
    period: Period | None,
    listed: int = 100,
) -> HealthReport:
    """The pipeline's red flags for `owner` (None: the team) and `pipeline` (None: all), with
    at most `listed` deals named for each."""
    at = as_of or datetime.now(UTC)
    period = period or Period.quarter_of(at.date())
    figures, created, dead = await _figures(
        connection, service, rules, as_of, at, period, listed, owner, pipeline
    )
    catalog = await service.catalog_holding(figures.versions)
    early = sorted(
        {key for v in figures.versions for key in catalog.get(*v).stage_keys[: rules.early_stages]}
        or {"discovery", "qualification"}
    )
    history = await closed_history(connection, at, owner, pipeline, early, period)
    targets = await targets_for(connection, period.label, owner, as_of)
    total = sum((t.amount for t in targets), Decimal(0)) if targets else None
    history = replace(history, created_value=created, target=total)
    health = assess(figures, catalog, history, period, rules)
    return HealthReport(as_of=at, period=period, targets=targets, health=health, dead_leads=dead)
