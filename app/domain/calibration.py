"""Quarterly recalibration: does each stage's claimed probability match how often deals
that were in it were won, and do stays last the days the pipeline expects? Pure.

Suggested values are advice: an admin applies them (or not) as a new pipeline version.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from app.domain.pipeline import Pipeline

MIN_DEALS_TO_SUGGEST = 5


@dataclass(frozen=True)
class Stay:
    """A closed deal's stay in a stage: whether the deal was won, and the stay's days
    (None: the deal closed from this stay, which is no measure of time in it)."""

    deal_id: UUID
    stage: str
    won: bool
    days: float | None


@dataclass(frozen=True)
class StageCalibration:
    stage: str
    claimed_probability: float
    deals: int
    won: int
    observed_win_rate: float | None
    expected_days: int
    stays_measured: int
    observed_mean_days: float | None
    observed_median_days: float | None
    suggested_probability: float | None
    suggested_expected_days: int | None
    """None: too few deals to suggest anything (fewer than MIN_DEALS_TO_SUGGEST)."""


@dataclass(frozen=True)
class Calibration:
    deals: int
    brier_score: float | None
    """Mean of (claimed probability - outcome)^2 over every (deal, stage it was in) pair:
    0 is perfect, 1 is always certain and always wrong."""
    predictions: int
    stages: list[StageCalibration]


def brier(pairs: Sequence[tuple[float, bool]]) -> float | None:
    """The Brier score of (probability, outcome) pairs (None: no pairs)."""
    if not pairs:
        return None
    return sum((p - (1.0 if won else 0.0)) ** 2 for p, won in pairs) / len(pairs)


def calibrate(stays: Sequence[Stay], pipeline: Pipeline) -> Calibration:
    """Each stage of `pipeline` against the closed deals that stayed in it."""
    visited: dict[str, dict[UUID, bool]] = defaultdict(dict)
    days: dict[str, list[float]] = defaultdict(list)
    for stay in stays:
        visited[stay.stage][stay.deal_id] = stay.won
        if stay.days is not None:
            days[stay.stage].append(stay.days)
    pairs: list[tuple[float, bool]] = []
    rows = []
    for stage in pipeline.stages:
        outcomes = visited.get(stage.key, {})
        pairs += [(stage.probability, won) for won in outcomes.values()]
        n, won = len(outcomes), sum(outcomes.values())
        rate = won / n if n else None
        measured = days.get(stage.key, [])
        median = statistics.median(measured) if measured else None
        enough = n >= MIN_DEALS_TO_SUGGEST
        rows.append(
            StageCalibration(
                stage=stage.key,
                claimed_probability=stage.probability,
                deals=n,
                won=won,
                observed_win_rate=round(rate, 4) if rate is not None else None,
                expected_days=stage.expected_days,
                stays_measured=len(measured),
                observed_mean_days=round(statistics.fmean(measured), 2) if measured else None,
                observed_median_days=round(median, 2) if median is not None else None,
                suggested_probability=round(min(max(rate, 0.01), 0.99), 2)
                if enough and rate is not None
                else None,
                suggested_expected_days=max(1, round(median))
                if enough and median is not None
                else None,
            )
        )
    score = brier(pairs)
    return Calibration(
        deals=len({s.deal_id for s in stays}),
        brier_score=round(score, 6) if score is not None else None,
        predictions=len(pairs),
        stages=rows,
    )
