"""Every flag kind reads as one sentence built from its numbers, and only from them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.explanations import explain, number
from app.domain.flags import KINDS

SENTENCES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "slow_in_stage",
        {"days_in_stage": 15.0, "expected_days": 7, "ratio": 2.14},
        "discovery",
        "In discovery for 15 days, 2.1x the 7 days expected.",
    ),
    (
        "inactive",
        {"days_without_buyer_activity": 9.5, "threshold_days": 7, "last_buyer_activity_at": None},
        "qualification",
        "No buyer activity for 9.5 days (the limit in qualification is 7 days).",
    ),
    (
        "next_step_overdue",
        {"due_date": "2026-10-20", "days_overdue": 1.0, "next_step": "Call the CFO"},
        "proposal",
        'The next step "Call the CFO" was due 2026-10-20 and is 1 day overdue.',
    ),
    (
        "no_next_step",
        {"since": "2026-10-02T09:00:00+00:00"},
        "discovery",
        "No next step has been set since 2026-10-02.",
    ),
    (
        "close_date_passed",
        {"close_date": "2026-10-31", "days_past": 3.25},
        "negotiation",
        "The close date 2026-10-31 passed 3.2 days ago with the deal still open.",
    ),
    (
        "missing_required_fields",
        {"missing": ["amount", "close_date"], "stage": "qualification"},
        "qualification",
        "Qualification requires amount and close date, still missing.",
    ),
    (
        "ghosting",
        {
            "silent_days": 9.0,
            "median_gap_days": 2.0,
            "threshold_days": 6.0,
            "activities_considered": 4,
        },
        "proposal",
        "The buyer has been silent for 9 days, past the 6 days their rhythm allows"
        " (a median gap of 2 days over 4 activities).",
    ),
    (
        "stuck_blocker",
        {"category": "risk_aversion", "days_open": 20.0, "threshold_days": 14},
        "proposal",
        "A risk aversion blocker has been open for 20 days, over the 14 days limit.",
    ),
    (
        "nurture_resume_due",
        {"resume_on": "2026-12-01"},
        "nurture",
        "Parked in nurture until 2026-12-01: time to resume or close it.",
    ),
    (
        "stage_evidence_retracted",
        {
            "stages": ["discovery"],
            "criteria": ["budget_confirmed"],
            "retracted_evidence_ids": ["e1"],
        },
        "qualification",
        "1 evidence item behind budget confirmed (earned in discovery) was retracted.",
    ),
]


def test_every_kind_has_a_sentence() -> None:
    assert sorted(kind for kind, *_ in SENTENCES) == sorted(KINDS)


@pytest.mark.parametrize(("kind", "numbers", "stage", "sentence"), SENTENCES)
def test_the_sentence_is_built_from_the_numbers(
    kind: str, numbers: dict[str, Any], stage: str, sentence: str
) -> None:
    assert explain(kind, numbers, stage) == sentence


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_a_figure_has_at_most_one_decimal(value: float) -> None:
    written = number(value)
    assert float(written) == pytest.approx(round(value, 1), abs=0.051)
    assert "." not in written or len(written.split(".")[1]) == 1
    assert not written.endswith(".0")


@given(st.floats(min_value=1.5, max_value=500), st.integers(min_value=1, max_value=90))
def test_slow_in_stage_always_reads_as_one_sentence(ratio: float, expected: int) -> None:
    numbers = {"days_in_stage": ratio * expected, "expected_days": expected, "ratio": ratio}
    sentence = explain("slow_in_stage", numbers, "proposal")
    assert sentence.endswith(".") and sentence.count(". ") == 0 and "{" not in sentence
    assert number(ratio) + "x" in sentence
