"""Pipeline health's sums against the same sums done by hand in Python, on open deals written
straight into the read model: the read model's query (stage lists and p90 read through an
index) and the query over facts given as arrays (deals replayed to a past time) must both
give what Python gives, for two pipeline versions holding the same stages to different
limits."""

from __future__ import annotations

import random
import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from app.domain.periods import Period
from app.domain.pipeline_facts import DealFacts
from app.domain.pipeline_health import Found, HealthRules, StageLimit
from app.projections.pipeline_health import health_figures

DAY = timedelta(days=1)
AS_OF = datetime(2026, 11, 20, 12, tzinfo=UTC)
PERIOD = Period.quarter_of(AS_OF.date())
RULES = HealthRules()
LISTED = 3


def limit(version: int, stage: str, expected: int, long_after: int | None) -> StageLimit:
    return StageLimit(
        pipeline_key="default",
        pipeline_version=version,
        stage=stage,
        probability=Decimal("0.25") * version,
        expected=expected * DAY,
        long_after=long_after * DAY if long_after else None,
        long_ratio=long_after / expected if long_after else None,
        early=stage == "discovery",
    )


# The same stages held to other limits by version 2; "custom" is in neither.
LIMITS = [
    limit(1, "discovery", 7, None),
    limit(1, "proposal", 10, 20),
    limit(2, "discovery", 3, 9),
    limit(2, "proposal", 14, None),
]


@dataclass(frozen=True)
class Row:
    facts: DealFacts
    status: str


def rows_of(seed: int) -> list[Row]:
    rng = random.Random(seed)
    # Some enter exactly at a limit's threshold (it counts), the rest anywhere in 30 days.
    at_limits = [AS_OF - x.expected for x in LIMITS] + [AS_OF - 20 * DAY, AS_OF - 9 * DAY]
    entered_choices = at_limits + [AS_OF - rng.uniform(0, 30) * DAY for _ in range(12)]
    rows = []
    for _ in range(rng.randint(1, 45)):
        entered = rng.choice(entered_choices)  # ties: the deal id decides
        opened = entered - rng.uniform(0, 5) * DAY
        if rng.random() < 0.05:
            opened = entered = AS_OF + DAY  # opened after as_of: not counted
        facts = DealFacts(
            deal_id=uuid.UUID(int=rng.getrandbits(128)),
            name="d",
            owner=rng.choice(["ann", "bob"]),
            stage=rng.choice(["discovery", "discovery", "proposal", "proposal", "custom"]),
            pipeline_key="default",
            pipeline_version=rng.choice([1, 2]),
            amount=rng.choice([None, Decimal(rng.randint(1, 90) * 1000)]),
            close_date=rng.choice([None, PERIOD.first_day, date(2099, 1, 1)]),
            opened_at=opened,
            stage_entered_at=entered,
            last_buyer_activity_at=rng.choice([None, AS_OF - rng.uniform(0, 80) * DAY]),
            last_evidence_at=rng.choice([None, AS_OF - rng.uniform(0, 80) * DAY]),
            has_next_step=rng.random() < 0.5,
        )
        rows.append(Row(facts, "won" if rng.random() < 0.1 else "open"))
    return rows


def age(f: DealFacts) -> float:
    return (AS_OF - f.stage_entered_at).total_seconds() / 86400


def p90(ages: list[float]) -> float:
    return ages[0] if len(ages) == 1 else statistics.quantiles(ages, n=10, method="inclusive")[8]


def by_hand(open_deals: list[DealFacts]) -> dict[str, dict[str, Any]]:
    """Each stage's figures as the rules define them."""
    limits = {(x.pipeline_version, x.stage): x for x in LIMITS}
    stages: dict[str, dict[str, Any]] = {}
    for stage in sorted({f.stage for f in open_deals}):
        here = sorted(
            (f for f in open_deals if f.stage == stage),
            key=lambda f: (f.stage_entered_at, f.deal_id),
        )
        own = [limits.get((f.pipeline_version, f.stage)) for f in here]
        aging = [
            f
            for f, x in zip(here, own, strict=True)
            if x and AS_OF - f.stage_entered_at >= x.expected
        ]
        long = [
            f
            for f, x in zip(here, own, strict=True)
            if x and x.long_after and AS_OF - f.stage_entered_at >= x.long_after
        ]
        stages[stage] = {
            "deals": Found(len(here), tuple(f.deal_id for f in here[:LISTED])),
            "value": sum((f.value for f in here), Decimal(0)),
            "weighted": sum(
                (f.value * (x.probability if x else 0) for f, x in zip(here, own, strict=True)),
                Decimal(0),
            ),
            "mean_age_days": statistics.fmean(age(f) for f in here),
            "p90_age_days": p90(sorted(age(f) for f in here)),
            "expected_days": max((x.expected.days for x in own if x), default=None),
            "aging": Found(len(aging), tuple(f.deal_id for f in aging[:LISTED])),
            "long": Found(len(long), tuple(f.deal_id for f in long[:LISTED])),
            "longest_days": max((age(f) for f in long), default=None),
        }
    return stages


def whole_by_hand(open_deals: list[DealFacts]) -> dict[str, Any]:
    """The figures over every open deal, each list in the rules' order."""
    limits = {(x.pipeline_version, x.stage): x for x in LIMITS}

    def listed(deals: list[DealFacts], key: Any) -> Found:
        return Found(len(deals), tuple(f.deal_id for f in sorted(deals, key=key)[:LISTED]))

    def weighted(f: DealFacts) -> Decimal:
        own = limits.get((f.pipeline_version, f.stage))
        return f.value * own.probability if own else Decimal(0)

    def touched(f: DealFacts) -> datetime:
        latest = [t for t in (f.last_buyer_activity_at, f.last_evidence_at) if t]
        return max(latest) if latest else f.opened_at  # not opened_at when touched since

    def buyer_touched(f: DealFacts) -> datetime:
        return f.last_buyer_activity_at or f.opened_at

    stale = [f for f in open_deals if touched(f) <= AS_OF - RULES.stale_days * DAY]
    dead = [
        f
        for f in open_deals
        if not f.has_next_step and buyer_touched(f) <= AS_OF - RULES.dead_days * DAY
    ]
    early = [f for f in open_deals if (x := limits.get((f.pipeline_version, f.stage))) and x.early]
    period = (PERIOD.first_day, PERIOD.next_first_day)
    in_period = [f for f in open_deals if f.close_date and period[0] <= f.close_date < period[1]]
    return {
        "deals": len(open_deals),
        "value": sum((f.value for f in open_deals), Decimal(0)),
        "stale": listed(stale, lambda f: (touched(f), f.deal_id)),
        "dead": listed(dead, lambda f: (buyer_touched(f), f.deal_id)),
        "early_value": sum((f.value for f in early), Decimal(0)),
        "early": listed(early, lambda f: (-f.value, f.deal_id)),
        "period_weighted": sum((weighted(f) for f in in_period), Decimal(0)),
        "in_period": listed(in_period, lambda f: (-weighted(f), f.deal_id)),
    }


def assert_figures_match(found: Any, expected: dict[str, dict[str, Any]]) -> None:
    assert [s.stage for s in found.stages] == list(expected)
    for s in found.stages:
        want = expected[s.stage]
        for name, value in want.items():
            got = getattr(s, name)
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-9, abs=1e-9), (s.stage, name)
            else:
                assert got == value, (s.stage, name)


@pytest.mark.parametrize("seed", range(6))
async def test_stage_figures_equal_the_rules_done_by_hand(
    pg: asyncpg.Connection, seed: int
) -> None:
    rows = rows_of(seed)
    await pg.executemany(
        "INSERT INTO deals (deal_id, opened_position, last_position, version, name, owner,"
        " stage, status, amount, close_date, stage_entered_at, pipeline_key, pipeline_version,"
        " opened_at, last_buyer_activity_at, last_evidence_at, has_next_step)"
        " VALUES ($1, $2, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        [
            (
                r.facts.deal_id,
                n + 1,
                r.facts.name,
                r.facts.owner,
                r.facts.stage,
                r.status,
                r.facts.amount,
                r.facts.close_date,
                r.facts.stage_entered_at,
                r.facts.pipeline_key,
                r.facts.pipeline_version,
                r.facts.opened_at,
                r.facts.last_buyer_activity_at,
                r.facts.last_evidence_at,
                r.facts.has_next_step,
            )
            for n, r in enumerate(rows)
        ],
    )
    for owner in (None, "ann"):
        open_deals = [
            r.facts
            for r in rows
            if r.status == "open" and r.facts.opened_at <= AS_OF and owner in (None, r.facts.owner)
        ]
        expected = by_hand(open_deals)
        now = await health_figures(pg, AS_OF, LIMITS, RULES, PERIOD, LISTED, owner=owner)
        assert_figures_match(now, expected)
        whole = whole_by_hand(open_deals)
        assert {name: getattr(now, name) for name in whole} == whole
        given = [r.facts for r in rows if r.status == "open" and owner in (None, r.facts.owner)]
        replayed = await health_figures(pg, AS_OF, LIMITS, RULES, PERIOD, LISTED, given=given)
        assert_figures_match(replayed, expected)
        assert replayed.versions == now.versions
        assert {name: getattr(replayed, name) for name in whole} == whole
