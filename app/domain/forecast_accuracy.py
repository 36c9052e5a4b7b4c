"""How good was the forecast? Accuracy, bias and MAPE of a forecast F against the amount A
actually won. Pure arithmetic; undefined (None) where nothing was won."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal


def accuracy(forecast: Decimal, actual: Decimal) -> float | None:
    """1 - |F - A| / A: 1 is perfect, 0 is off by the whole amount won (it can go below)."""
    return 1 - float(abs(forecast - actual) / actual) if actual > 0 else None


def bias(forecast: Decimal, actual: Decimal) -> float | None:
    """(F - A) / A: positive when the forecast promised more than was won."""
    return float((forecast - actual) / actual) if actual > 0 else None


def mape(pairs: Sequence[tuple[Decimal, Decimal]]) -> float | None:
    """The mean of |F - A| / A over the (F, A) pairs where A > 0 (None: no such pair)."""
    errors = [float(abs(f - a) / a) for f, a in pairs if a > 0]
    return sum(errors) / len(errors) if errors else None
