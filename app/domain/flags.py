"""Velocity flags: which deals are not really moving, and why. Pure: time is an input.

Each flag says which rule raised it and on which numbers. `raised_at` is when its condition
became true (computed from the deal's facts, not from when anyone looked), so evaluating the
same history at the same time always gives the same flags, whoever evaluates and whenever.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, get_args

from app.domain import events as e
from app.domain.pipeline import ACTIVE, BUILT_IN, NURTURE, Catalog, Stage
from app.domain.state import DealState, Recorded, evolve

DAY = timedelta(days=1)
LATE = timedelta(seconds=1)
"""How long after a threshold `next_change` answers: each threshold is met *at* its time
(ghosting just after), and a flag's raised_at is computed from its inputs, not from when it
was judged. One at `as_of` itself is kept: met or not by then, a second later it is. A flag
may so stand up to this long before the time `next_change` gave."""
FlagKind = Literal[
    "slow_in_stage",
    "inactive",
    "next_step_overdue",
    "no_next_step",
    "close_date_passed",
    "missing_required_fields",
    "ghosting",
    "stuck_blocker",
    "nurture_resume_due",
    "stage_evidence_retracted",
]
KINDS: tuple[str, ...] = get_args(FlagKind)
_EVERY = frozenset(KINDS)
RECENT_BUYER_ACTIVITY = 20  # enough to judge a deal's rhythm
DRIFTING: frozenset[str] = frozenset(
    {
        "slow_in_stage",
        "inactive",
        "next_step_overdue",
        "close_date_passed",
        "ghosting",
        "stuck_blocker",
    }
)
"""Kinds whose numbers grow as time passes (days in stage, days overdue...)."""
TIMED: frozenset[str] = DRIFTING | {"nurture_resume_due"}
"""Kinds time alone can raise between events (`next_change` says when); the others stand or
not as the deal's last event left them."""
UNTIMED_INPUTS: tuple[str, ...] = ("evidence", "stakeholders", "earned", "reopened")
"""What of a deal's state only the kinds outside `TIMED` read (see `changed_kinds`): most of
a stored subject, left out where only the timed rules judge it."""


@dataclass(frozen=True)
class FlagRules:
    slow_warning_ratio: float = 1.5
    slow_critical_ratio: float = 2.0
    inactive_days: float = 7
    inactive_days_by_stage: dict[str, float] = field(default_factory=dict)
    ghosting_multiplier: float = 3.0
    ghosting_floor_days: float = 2.0
    ghosting_min_activities: int = 3
    stuck_blocker_days: float = 14
    overdue_critical_days: float = 7
    close_date_critical_days: float = 14


@dataclass(frozen=True)
class Flag:
    kind: str
    severity: str
    raised_at: datetime
    numbers: dict[str, Any]


@dataclass(frozen=True)
class Subject:
    """What the rules need of one deal: its state, recent buyer activity times, and since
    when it has had no next step."""

    state: DealState
    buyer_times: tuple[datetime, ...] = ()
    no_next_step_since: datetime | None = None


def advance(subject: Subject, recorded: Recorded, pipelines: Catalog = BUILT_IN) -> Subject:
    """The subject after one more event."""
    state = evolve(subject.state, recorded, pipelines)
    buyer_times = subject.buyer_times
    event = recorded.event
    if isinstance(event, e.BuyerActivityRecorded):
        buyer_times = tuple(sorted((*buyer_times, event.occurred_at)))[-RECENT_BUYER_ACTIVITY:]
    since = subject.no_next_step_since
    if state.next_step is not None:
        since = None
    elif since is None:
        since = recorded.recorded_at
    return Subject(state, buyer_times, since)


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _days(delta: timedelta) -> float:
    return round(delta / DAY, 2)


def thresholds(stage: Stage, rules: FlagRules) -> tuple[float, float, float]:
    """(slow warning ratio, slow critical ratio, inactive days) for a deal in `stage`: the
    stage's own stall thresholds in its pipeline version, else the service's settings."""
    stall = stage.stall
    return (
        stall.slow_warning_ratio or rules.slow_warning_ratio,
        stall.slow_critical_ratio or rules.slow_critical_ratio,
        stall.inactive_days or rules.inactive_days_by_stage.get(stage.key, rules.inactive_days),
    )


def changed_kinds(before: Subject, after: Subject, at: datetime) -> frozenset[str] | None:
    """The flag kinds whose inputs one event recorded at `at` changed (None: every kind).

    Between events a rule's flag only comes into being as time passes (none clears by
    time, and `raised_at` is computed from its inputs), so a rule whose inputs an event left
    as they were stands after it as before: a replay need not judge it there, only where
    its inputs change and at the deal's last event. Compared by identity: the fold keeps
    an unchanged field's object, so a changed object is a (possibly equal) new value.
    Every rule reads the deal's status, pipeline version, stage and when it entered it; what
    else each reads is listed below, next to `evaluate` (keep the two in step)."""
    old, new = before.state, after.state
    if (
        new.stage_entered_at is None
        or old.status is not new.status
        or old.stage is not new.stage
        or old.stage_entered_at is not new.stage_entered_at
        or old.pipeline_key is not new.pipeline_key
        or old.pipeline_version is not new.pipeline_version
    ):
        return None
    kinds = []
    if old.nurture_resume_on is not new.nurture_resume_on:
        kinds.append("nurture_resume_due")
    times = after.buyer_times
    if before.buyer_times is not times or old.opened_at is not new.opened_at:
        kinds += ("inactive", "ghosting")
    elif times and times[-1] > at:
        kinds.append("ghosting")  # activity dated after `at` joins its rhythm as time passes
    if (
        old.next_step is not new.next_step
        or before.no_next_step_since is not after.no_next_step_since
    ):
        kinds += ("next_step_overdue", "no_next_step")
    if old.close_date is not new.close_date:
        kinds.append("close_date_passed")
    if (
        old.amount is not new.amount
        or old.close_date is not new.close_date
        or old.stakeholders is not new.stakeholders
    ):
        kinds.append("missing_required_fields")  # what DealState.has_field reads
    if (
        old.evidence is not new.evidence
        or old.earned is not new.earned
        or old.reopened is not new.reopened
    ):
        kinds.append("stage_evidence_retracted")
    if old.blockers is not new.blockers:
        kinds.append("stuck_blocker")
    return frozenset(kinds)


def evaluate(
    subject: Subject,
    as_of: datetime,
    rules: FlagRules | None = None,
    pipelines: Catalog = BUILT_IN,
    kinds: frozenset[str] | None = None,
) -> list[Flag]:
    """The flags standing on this deal at `as_of`, by the thresholds of its pipeline version
    (held in `pipelines`); of `kinds` only, when given."""
    return _evaluate(subject, subject.state, as_of, rules or FlagRules(), pipelines, kinds)


def _evaluate(
    subject: Subject,
    state: DealState,
    as_of: datetime,
    rules: FlagRules,
    pipelines: Catalog,
    kinds: frozenset[str] | None,
) -> list[Flag]:
    if state.status == NURTURE:
        if kinds is not None and "nurture_resume_due" not in kinds:
            return []
        resume = state.nurture_resume_on
        if resume is not None and as_of >= _start_of(resume):
            return [
                Flag(
                    "nurture_resume_due",
                    "warning",
                    _start_of(resume),
                    {"resume_on": resume.isoformat()},
                )
            ]
        return []
    pipeline = state.pipeline_in(pipelines)
    if state.status != ACTIVE or state.stage not in pipeline.stage_keys:
        return []
    judged = (_EVERY if kinds is None else kinds).__contains__  # a C call, not a closure
    flags: list[Flag] = []
    stage = pipeline.stage(state.stage)
    entered = state.stage_entered_at or as_of

    if judged("slow_in_stage") or judged("inactive"):
        slow_warning, slow_critical, limit = thresholds(stage, rules)
    if judged("slow_in_stage"):
        in_stage = as_of - entered
        ratio = (in_stage / DAY) / stage.expected_days
        if ratio >= slow_warning:
            flags.append(
                Flag(
                    "slow_in_stage",
                    "critical" if ratio >= slow_critical else "warning",
                    entered + stage.expected_days * slow_warning * DAY,
                    {
                        "days_in_stage": _days(in_stage),
                        "expected_days": stage.expected_days,
                        "ratio": round(ratio, 2),
                    },
                )
            )

    if judged("inactive"):
        last_buyer = subject.buyer_times[-1] if subject.buyer_times else None
        quiet_since = last_buyer or state.opened_at or entered
        if as_of - quiet_since >= limit * DAY:
            flags.append(
                Flag(
                    "inactive",
                    "warning",
                    quiet_since + limit * DAY,
                    {
                        "days_without_buyer_activity": _days(as_of - quiet_since),
                        "threshold_days": limit,
                        "last_buyer_activity_at": last_buyer.isoformat() if last_buyer else None,
                    },
                )
            )

    step = state.next_step
    if step is not None and judged("next_step_overdue") and as_of >= _start_of(step.due_date + DAY):
        overdue = as_of - _start_of(step.due_date + DAY)
        flags.append(
            Flag(
                "next_step_overdue",
                "critical" if overdue >= rules.overdue_critical_days * DAY else "warning",
                _start_of(step.due_date + DAY),
                {
                    "due_date": step.due_date.isoformat(),
                    "days_overdue": _days(overdue),
                    "next_step": step.description,
                },
            )
        )
    if step is None and judged("no_next_step"):
        since = subject.no_next_step_since or entered
        flags.append(Flag("no_next_step", "warning", since, {"since": since.isoformat()}))

    if (
        state.close_date is not None
        and judged("close_date_passed")
        and as_of >= _start_of(state.close_date + DAY)
    ):
        late = as_of - _start_of(state.close_date + DAY)
        flags.append(
            Flag(
                "close_date_passed",
                "critical" if late >= rules.close_date_critical_days * DAY else "warning",
                _start_of(state.close_date + DAY),
                {"close_date": state.close_date.isoformat(), "days_past": _days(late)},
            )
        )

    missing = (
        state.missing_required_fields(pipeline, state.stage)
        if judged("missing_required_fields")
        else []
    )
    if missing:
        flags.append(
            Flag(
                "missing_required_fields",
                "warning",
                entered,
                {"missing": missing, "stage": state.stage},
            )
        )

    ghost = _ghosting(subject.buyer_times, as_of, rules) if judged("ghosting") else None
    if ghost is not None:
        flags.append(ghost)

    unsupported = state.unsupported_earned_criteria() if judged("stage_evidence_retracted") else {}
    if unsupported:
        retracted = [state.evidence[i] for ids in unsupported.values() for i in ids]
        stages = [
            stage.key
            for stage in pipeline.stages
            if any(criterion.key in unsupported for criterion in stage.exit_criteria)
        ]
        flags.append(
            Flag(
                "stage_evidence_retracted",
                "critical",
                max(item.retracted_at or entered for item in retracted),
                {
                    "stages": stages,
                    "criteria": sorted(unsupported),
                    "retracted_evidence_ids": sorted({str(i.evidence_id) for i in retracted}),
                },
            )
        )

    oldest = (
        min(state.blockers.values(), key=lambda b: b.raised_at, default=None)
        if judged("stuck_blocker")
        else None
    )
    if oldest is not None and as_of - oldest.raised_at >= rules.stuck_blocker_days * DAY:
        flags.append(
            Flag(
                "stuck_blocker",
                "warning",
                oldest.raised_at + rules.stuck_blocker_days * DAY,
                {
                    "blocker_id": str(oldest.blocker_id),
                    "category": oldest.category,
                    "days_open": _days(as_of - oldest.raised_at),
                    "threshold_days": rules.stuck_blocker_days,
                },
            )
        )
    return flags


def next_change(
    subject: Subject,
    as_of: datetime,
    rules: FlagRules | None = None,
    pipelines: Catalog = BUILT_IN,
) -> datetime | None:
    """The first time after `as_of` at which time alone may raise a flag on this deal or
    make one critical (None: it never will, until an event changes the deal). Mirrors the
    thresholds of `evaluate`; judged then, the flag stands (the projector's sweep only
    visits deals at their next change, not every open deal every minute)."""
    rules = rules or FlagRules()
    state = subject.state
    times: list[datetime] = []
    if state.status == NURTURE:
        if state.nurture_resume_on is not None:
            times.append(_start_of(state.nurture_resume_on))
    elif (
        state.status == ACTIVE
        and state.stage in (pipeline := state.pipeline_in(pipelines)).stage_keys
    ):
        stage = pipeline.stage(state.stage)
        slow_warning, slow_critical, limit = thresholds(stage, rules)
        entered = state.stage_entered_at
        if entered is not None:
            times += [
                entered + stage.expected_days * r * DAY for r in (slow_warning, slow_critical)
            ]
        last_buyer = subject.buyer_times[-1] if subject.buyer_times else None
        quiet_since = last_buyer or state.opened_at or entered
        if quiet_since is not None:
            times.append(quiet_since + limit * DAY)
        if state.next_step is not None:
            overdue = _start_of(state.next_step.due_date + DAY)
            times += [overdue, overdue + rules.overdue_critical_days * DAY]
        if state.close_date is not None:
            late = _start_of(state.close_date + DAY)
            times += [late, late + rules.close_date_critical_days * DAY]
        if state.blockers:
            oldest = min(state.blockers.values(), key=lambda b: b.raised_at)
            times.append(oldest.raised_at + rules.stuck_blocker_days * DAY)
        # Ghosting: each buyer activity still ahead joins the rhythm when its time comes;
        # the deal's silence passes its threshold just after the last one.
        buyer = subject.buyer_times
        times += [t for t in buyer if t > as_of]
        past = buyer[: bisect.bisect_right(buyer, as_of)]
        if len(past) >= rules.ghosting_min_activities:
            median = _median_gap(tuple(past))
            threshold = max(rules.ghosting_multiplier * median, rules.ghosting_floor_days)
            times.append(past[-1] + threshold * DAY)
    ahead = [t for t in times if t >= as_of]
    return min(ahead) + LATE if ahead else None


@functools.lru_cache(maxsize=4096)
def _median_gap(times: tuple[datetime, ...]) -> float:
    """Days between consecutive activities, median (the same times are judged again and
    again as a deal's events are folded: once each)."""
    return statistics.median([(b - a) / DAY for a, b in itertools.pairwise(times)])


def _ghosting(times: Sequence[datetime], as_of: datetime, rules: FlagRules) -> Flag | None:
    """Silent for longer than this deal's own rhythm allows: k x its median gap, floored."""
    past = times[: bisect.bisect_right(times, as_of)]  # times are sorted
    if len(past) < rules.ghosting_min_activities:
        return None
    silent = (as_of - past[-1]) / DAY
    if silent <= rules.ghosting_floor_days:
        return None  # within the floor, whatever the rhythm (most judgements: no median)
    median = _median_gap(tuple(past))
    threshold = max(rules.ghosting_multiplier * median, rules.ghosting_floor_days)
    if silent <= threshold:
        return None
    return Flag(
        "ghosting",
        "critical",
        past[-1] + threshold * DAY,
        {
            "silent_days": round(silent, 2),
            "median_gap_days": round(median, 2),
            "threshold_days": round(threshold, 2),
            "activities_considered": len(past),
        },
    )
