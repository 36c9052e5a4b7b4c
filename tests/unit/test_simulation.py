"""The history generator (demo and benchmarks): deterministic, in time order, and paced so
stage durations come out near the pipeline's expected days."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, datetime

from app.domain.errors import DomainError
from app.domain.pipeline import DEFAULT_PIPELINE
from app.domain.state import DealState
from app.service.simulation import History, decide_step

END = datetime(2026, 11, 1, tzinfo=UTC)


def play(seed: int, deals: int = 120) -> tuple[list[tuple[datetime, str]], dict[str, list[float]]]:
    history = History(deals=deals, seed=seed, days=150, end=END)
    trace: list[tuple[datetime, str]] = []
    stays: dict[str, list[float]] = defaultdict(list)
    entered: dict[object, tuple[str, datetime]] = {}
    while (step := history.next()) is not None:
        state: DealState | None = history.states.get(step.deal_id)
        try:
            events, after = decide_step(state, step)
        except DomainError:
            assert state is not None
            history.settled(step, state)
            continue
        trace.extend((step.at, event.type) for event in events)
        if after.stage != (state.stage if state else None) and not after.is_terminal:
            if state is not None and step.deal_id in entered:
                stage, since = entered[step.deal_id]
                stays[stage].append((step.at - since).total_seconds() / 86_400)
            entered[step.deal_id] = (after.stage, step.at)
        history.settled(step, after)
    return trace, stays


def test_the_same_seed_gives_the_same_history_in_time_order() -> None:
    first, _ = play(seed=11, deals=30)
    assert first == play(seed=11, deals=30)[0]
    assert first != play(seed=12, deals=30)[0]
    times = [at for at, _ in first]
    assert times == sorted(times) and times[-1] <= END
    kinds = {kind for _, kind in first}
    assert {"DealOpened", "StageAdvanced", "BuyerActivityRecorded", "EvidenceRecorded"} <= kinds
    assert kinds & {"DealWon", "DealDisqualified", "StageRegressed", "DealNurtured"}


def test_stage_durations_are_near_the_pipelines_expected_days() -> None:
    _, stays = play(seed=5)
    for stage in DEFAULT_PIPELINE.stages[:3]:  # enough finished stays to judge
        days = stays[stage.key]
        assert len(days) >= 15, stage.key
        assert 0.4 * stage.expected_days <= statistics.fmean(days) <= 1.6 * stage.expected_days
