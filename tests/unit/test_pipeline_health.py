"""Pipeline health rules without a database: thresholds at their value, bounds that hold."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidRequest
from app.domain.periods import Period
from app.domain.pipeline import BUILT_IN, DEFAULT_PIPELINE, Pipeline
from app.domain.pipeline_facts import DealFacts, History
from app.domain.pipeline_health import assess, herfindahl, percentile

T0 = datetime(2026, 7, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def deal(stage: str = "discovery", amount: int = 1000, touched_days_ago: float = 0) -> DealFacts:
    return DealFacts(
        deal_id=uuid.uuid4(),
        name="d",
        owner="rick",
        stage=stage,
        pipeline_key="default",
        pipeline_version=1,
        amount=Decimal(amount),
        close_date=date(2026, 9, 1),
        opened_at=T0 - 100 * DAY,
        stage_entered_at=T0,
        last_buyer_activity_at=T0 - touched_days_ago * DAY,
        last_evidence_at=None,
        has_next_step=True,
    )


def rules_raised(deals: list[DealFacts]) -> set[str]:
    health = assess(deals, T0, BUILT_IN, History(), Period.quarter_of(T0.date()))
    return {f.rule for f in health.findings}


def test_stale_share_triggers_at_30_percent_not_below() -> None:
    three_of_ten = [deal(touched_days_ago=30) for _ in range(3)] + [deal() for _ in range(7)]
    assert "stale_pipeline" in rules_raised(three_of_ten)
    three_of_eleven = [*three_of_ten, deal()]
    assert "stale_pipeline" not in rules_raised(three_of_eleven)


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


@given(st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=50))
def test_p90_lies_within_the_values(values: list[float]) -> None:
    assert min(values) - 1e-9 <= percentile(values, 0.9) <= max(values) + 1e-9


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
    in_negotiation = replace(deal("negotiation"), pipeline_version=2)
    at = T0 + 42 * DAY  # 1.5 x its 28 expected days
    found = assess([in_negotiation], at, catalog, History(), Period.quarter_of(at.date()))
    assert [(f.rule, f.stage) for f in found.findings if f.rule == "too_long_in_stage"] == [
        ("too_long_in_stage", "negotiation")
    ]
    just_before = assess(
        [in_negotiation],
        at - timedelta(seconds=1),
        catalog,
        History(),
        Period.quarter_of(at.date()),
    )
    assert "too_long_in_stage" not in {f.rule for f in just_before.findings}
