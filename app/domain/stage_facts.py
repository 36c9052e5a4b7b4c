"""Per-stage facts of one deal (HubSpot's "date entered / exited / time in stage"): when it
first entered each stage, when it last left it, its latest and its cumulative time there
(repeat stays summed). Pure: the stays and the time are inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

DAY = timedelta(days=1)


@dataclass(frozen=True)
class StayTimes:
    stage: str
    entered_at: datetime
    left_at: datetime | None


@dataclass(frozen=True)
class StageFacts:
    stage: str
    stays: int
    first_entered_at: datetime
    last_exited_at: datetime | None
    """None while the deal has never left it (it is there now)."""
    latest_days: float
    """The latest stay, until `as_of` if it is still going."""
    cumulative_days: float
    current: bool


def stage_facts(stays: Sequence[StayTimes], as_of: datetime) -> list[StageFacts]:
    """Facts per stage in the order the deal first entered them, as they stood at `as_of`
    (stays entered later are left out; a stay left later is still going)."""
    by_stage: dict[str, list[tuple[datetime, datetime | None]]] = {}
    for stay in sorted(stays, key=lambda s: s.entered_at):
        if stay.entered_at > as_of:
            continue
        left = stay.left_at if stay.left_at is not None and stay.left_at <= as_of else None
        by_stage.setdefault(stay.stage, []).append((stay.entered_at, left))
    facts = []
    for stage, times in by_stage.items():
        exits = [left for _, left in times if left is not None]
        spans = [((left or as_of) - entered) / DAY for entered, left in times]
        facts.append(
            StageFacts(
                stage=stage,
                stays=len(times),
                first_entered_at=times[0][0],
                last_exited_at=max(exits) if exits and times[-1][1] is not None else None,
                latest_days=round(spans[-1], 4),
                cumulative_days=round(sum(spans), 4),
                current=times[-1][1] is None,
            )
        )
    return facts
