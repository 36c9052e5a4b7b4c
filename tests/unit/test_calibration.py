"""Calibration: the Brier score's bounds, and suggestions only with enough deals."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from app.domain.calibration import MIN_DEALS_TO_SUGGEST, Stay, brier, calibrate
from app.domain.pipeline import DEFAULT_PIPELINE


@given(st.lists(st.tuples(st.floats(min_value=0, max_value=1), st.booleans()), min_size=1))
def test_brier_lies_between_0_and_1(pairs: list[tuple[float, bool]]) -> None:
    score = brier(pairs)
    assert score is not None and 0 <= score <= 1


def test_a_perfectly_sure_and_right_forecast_scores_0_and_wrong_scores_1() -> None:
    assert brier([(1.0, True), (0.0, False)]) == 0
    assert brier([(1.0, False), (0.0, True)]) == 1
    assert brier([]) is None


def test_suggestions_need_enough_deals_and_follow_what_was_observed() -> None:
    deals = [uuid.uuid4() for _ in range(MIN_DEALS_TO_SUGGEST)]
    stays = [Stay(d, "discovery", i < 2, 10.0 + i) for i, d in enumerate(deals)]
    found = {row.stage: row for row in calibrate(stays, DEFAULT_PIPELINE).stages}
    discovery = found["discovery"]
    assert (discovery.won, discovery.deals, discovery.observed_win_rate) == (2, 5, 0.4)
    assert discovery.suggested_probability == 0.4
    assert discovery.suggested_expected_days == 12  # median of 10..14
    few = calibrate(stays[:-1], DEFAULT_PIPELINE).stages[0]
    assert few.suggested_probability is None and few.suggested_expected_days is None
