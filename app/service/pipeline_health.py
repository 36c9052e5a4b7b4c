"""Pipeline health now (read models) or as it stood at a past time (deals replayed)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from app.db import Connect, side_by_side
from app.domain.periods import Period
from app.domain.pipeline import Catalog
from app.domain.pipeline_facts import DealFacts, History, facts_of, is_open
from app.domain.pipeline_health import (
    Health,
    HealthFigures,
    HealthRules,
    assess,
    stage_limits,
)
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
    connect: Connect | None = None,
) -> HealthReport:
    """The pipeline's red flags for `owner` (None: the team) and `pipeline` (None: all), with
    at most `listed` deals named for each. `connect`: another connection for the queries
    that need not wait for the open deals' figures (as of now only)."""
    at = as_of or datetime.now(UTC)
    period = period or Period.quarter_of(at.date())
    window = timedelta(days=rules.creation_window_days)
    if as_of is None:
        figures, created, history = await _now(
            connection, service, rules, at, period, listed, owner, pipeline, connect
        )
        dead = await deal_facts(connection, figures.dead.ids)
        catalog = await service.catalog_holding(figures.versions)
    else:
        states = [
            s
            for s in await deal_states(connection, service, as_of)
            if (owner is None or s.owner == owner)
            and (pipeline is None or s.pipeline_key == pipeline)
        ]
        every = [facts_of(s) for s in states]
        created = sum((f.value for f in every if at - window < f.opened_at <= at), Decimal(0))
        given = [facts_of(s) for s in states if is_open(s)]
        followed = {(f.pipeline_key, f.pipeline_version) for f in given}
        limits = stage_limits(await service.catalog_holding(followed), followed, rules)
        figures = await health_figures(connection, at, limits, rules, period, listed, given=given)
        by_id = {f.deal_id: f for f in given}
        dead = [by_id[i] for i in figures.dead.ids]
        catalog = await service.catalog_holding(figures.versions)
        early = _early(catalog, figures.versions, rules)
        history = await closed_history(connection, at, owner, pipeline, early, period)
    targets = await targets_for(connection, period.label, owner, as_of)
    total = sum((t.amount for t in targets), Decimal(0)) if targets else None
    history = replace(history, created_value=created, target=total)
    health = assess(figures, catalog, history, period, rules)
    return HealthReport(as_of=at, period=period, targets=targets, health=health, dead_leads=dead)


def _early(catalog: Catalog, versions: Iterable[tuple[str, int]], rules: HealthRules) -> list[str]:
    """The early stages of these pipeline versions (the first `early_stages` of each)."""
    return sorted(
        {key for v in versions for key in catalog.get(*v).stage_keys[: rules.early_stages]}
        or {"discovery", "qualification"}
    )


async def _now(
    connection: asyncpg.Connection,
    service: DealService,
    rules: HealthRules,
    at: datetime,
    period: Period,
    listed: int,
    owner: str | None,
    pipeline: str | None,
    connect: Connect | None,
) -> tuple[HealthFigures, Decimal, History]:
    """From the read models: the open deals' figures, the value opened in the creation
    window and the closed deals' history. Given `connect`, the last two run beside the
    figures on a spare connection (a third less time for one client, the same work), with
    the early stages of every pipeline version: which versions open deals follow is only
    known with the figures, and the history is read again in the rare case that differs."""
    catalog = await service.every_pipeline_version()
    versions = [(key, v) for key in catalog.keys for v in range(1, catalog.newest(key) + 1)]
    guess = _early(catalog, versions, rules)

    async def figures_of(connection: asyncpg.Connection) -> HealthFigures:
        limits = stage_limits(catalog, versions, rules)
        return await health_figures(
            connection, at, limits, rules, period, listed, owner=owner, pipeline=pipeline
        )

    async def closed_and_created(other: asyncpg.Connection) -> tuple[History, Decimal]:
        history = await closed_history(other, at, owner, pipeline, guess, period)
        since = at - timedelta(days=rules.creation_window_days)
        return history, await created_value(other, since, at, owner, pipeline)

    figures, (history, created) = await side_by_side(
        connection, connect, figures_of, closed_and_created
    )
    early = _early(catalog, figures.versions, rules)
    if early != guess:
        history = await closed_history(connection, at, owner, pipeline, early, period)
    return figures, created, history
