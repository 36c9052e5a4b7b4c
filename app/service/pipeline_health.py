"""Pipeline health now (read models) or as it stood at a past time (deals replayed)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from app.domain.periods import Period
from app.domain.pipeline_facts import DealFacts, facts_of, is_open
from app.domain.pipeline_health import Health, HealthRules, assess
from app.projections.pipeline_health import closed_history, created_value, open_facts
from app.projections.targets import Target, targets_for
from app.service.deals import DealService
from app.service.snapshots import deal_states


@dataclass(frozen=True)
class HealthReport:
    as_of: datetime
    period: Period
    targets: list[Target]
    health: Health


async def _facts(
    connection: asyncpg.Connection,
    service: DealService,
    as_of: datetime | None,
    at: datetime,
    owner: str | None,
    pipeline: str | None,
    window: timedelta,
) -> tuple[list[DealFacts], Decimal]:
    """Open deals' facts and the value opened in the creation window before `at`."""
    if as_of is None:
        facts = await open_facts(connection, owner, pipeline)
        created = await created_value(connection, at - window, at, owner, pipeline)
        return facts, created
    states = [
        s
        for s in await deal_states(connection, service, as_of)
        if (owner is None or s.owner == owner) and (pipeline is None or s.pipeline_key == pipeline)
    ]
    every = [facts_of(s) for s in states]
    created = sum((f.value for f in every if at - window < f.opened_at <= at), Decimal(0))
    return [facts_of(s) for s in states if is_open(s)], created


async def pipeline_health(
    connection: asyncpg.Connection,
    service: DealService,
    rules: HealthRules,
    *,
    as_of: datetime | None,
    owner: str | None,
    pipeline: str | None,
    period: Period | None,
) -> HealthReport:
    """The pipeline's red flags for `owner` (None: the team) and `pipeline` (None: all)."""
    at = as_of or datetime.now(UTC)
    period = period or Period.quarter_of(at.date())
    window = timedelta(days=rules.creation_window_days)
    facts, created = await _facts(connection, service, as_of, at, owner, pipeline, window)
    catalog = await service.catalog_holding((f.pipeline_key, f.pipeline_version) for f in facts)
    early = sorted(
        {
            key
            for f in facts
            for key in catalog.get(f.pipeline_key, f.pipeline_version).stage_keys[
                : rules.early_stages
            ]
        }
        or {"discovery", "qualification"}
    )
    history = await closed_history(connection, at, owner, pipeline, early, period)
    targets = await targets_for(connection, period.label, owner, as_of)
    total = sum((t.amount for t in targets), Decimal(0)) if targets else None
    history = replace(history, created_value=created, target=total)
    health = assess(facts, at, catalog, history, period, rules)
    return HealthReport(as_of=at, period=period, targets=targets, health=health)
