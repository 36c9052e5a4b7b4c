"""Pipeline health rules without a database: thresholds at their value, bounds that hold."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidRequest
from app.domain.periods import Period
from app.domain.pipeline import BUILT_IN, DEFAULT_PIPELINE, Pipeline
from app.domain.pipeline_facts import History
from app.domain.pipeline_health import (
    Found,
    HealthFigures,
    HealthRules,
    StageFigures,
    assess,
    herfindahl,
    stage_limits,
)

T0 = datetime(2026, 7, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def figures(deals: int, stale: int) -> HealthFigures:
    """`deals` open deals in discovery, `stale` of them untouched for the stale days."""
    value = Decimal(1000 * deals)
    return HealthFigures(
        as_of=T0,
        deals=deals,
        value=value,
        stages=[
            StageFigures(
                stage="discovery",
                deals=Found(deals),
                value=value,
                weighted=value / 10,
                mean_age_days=1.0,
                p90_age_days=1.0,
                expected_days=7,
                aging=Found(),
                long=Found(),
                longest_days=None,
                long_ratio=None,
                long_expected_days=None,
            )
        ],
        versions=[("default", 1)],
        stale=Found(stale),
        dead=Found(),
        early_value=value,
        early=Found(deals),
        period_weighted=Decimal(0),
        in_period=Found(),
    )


def rules_raised(found: HealthFigures) -> set[str]:
    health = assess(found, BUILT_IN, History(), Period.quarter_of(T0.date()))
    return {f.rule for f in health.findings}


def test_stale_share_triggers_at_30_percent_not_below() -> None:
    assert "stale_pipeline" in rules_raised(figures(10, stale=3))
    assert "stale_pipeline" not in rules_raised(figures(11, stale=3))


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=12))
def test_herfindahl_lies_between_even_and_all_in_one(values: list[int]) -> None:
    index = herfindahl([Decimal(v) for v in values])
    positive = [v for v in values if v > 0]
    if not positive:
        assert index == 0.0
    else:
        assert 1 / len(values) - 1e-9 <= index <= 1 + 1e-9
        if len(positive) == 1:
            assert abs(index - 1) < 1e-9


def test_periods_parse_and_step_back() -> None:
    q3 = Period.parse("2026-Q3")
    assert (q3.first_day, q3.next_first_day) == (date(2026, 7, 1), date(2026, 10, 1))
    assert str(q3.previous()) == "2026-Q2" and str(Period.parse("2026-01").previous()) == "2025-12"
    assert date(2026, 9, 30) in q3 and date(2026, 10, 1) not in q3


def test_periods_outside_the_years_the_service_takes_are_refused() -> None:
    for text in ("9999-Q4", "0000-01", "1969-12"):
        with pytest.raises(InvalidRequest):
            Period.parse(text)


def test_a_stage_the_pipeline_marks_is_watched_for_long_stays_at_its_ratio() -> None:
    document = DEFAULT_PIPELINE.model_dump()
    document["version"] = 2
    document["stages"][DEFAULT_PIPELINE.index("negotiation")]["stall"]["long_stay_ratio"] = 1.5
    marked = Pipeline.model_validate(document)
    catalog = BUILT_IN.with_versions("default", [marked])
    limits = {
        (limit.pipeline_version, limit.stage): limit
        for limit in stage_limits(catalog, [("default", 1), ("default", 2)], HealthRules())
    }
    negotiation = limits[(2, "negotiation")]
    assert negotiation.long_after == 42 * DAY and negotiation.long_ratio == 1.5  # 1.5 x 28
    assert limits[(1, "negotiation")].long_after is None  # version 1 does not watch it
    # Proposal is watched by the rules' default: twice its 21 expected days, in both.
    assert limits[(1, "proposal")].long_after == limits[(2, "proposal")].long_after == 42 * DAY
    assert [s for (v, s), limit in limits.items() if v == 1 and limit.early] == [
        "discovery",
        "qualification",
    ]
