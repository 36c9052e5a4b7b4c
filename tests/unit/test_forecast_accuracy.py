"""Forecast accuracy arithmetic: bounds and the undefined case."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from app.domain.forecast_accuracy import accuracy, bias, mape

money = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False)


@given(money, money)
def test_accuracy_is_at_most_one_and_one_only_when_exact(f: Decimal, a: Decimal) -> None:
    score = accuracy(f, a)
    if a == 0:
        assert score is None and bias(f, a) is None
        return
    assert score is not None and score <= 1
    assert (score == 1) == (f == a)
    assert abs(abs(1 - score) - abs(bias(f, a) or 0)) < 1e-12


def test_mape_skips_periods_with_nothing_won() -> None:
    pairs = [(Decimal(9500), Decimal(10000)), (Decimal(5), Decimal(0)), (Decimal(15), Decimal(10))]
    assert mape(pairs) == (0.05 + 0.5) / 2
    assert mape([(Decimal(1), Decimal(0))]) is None
