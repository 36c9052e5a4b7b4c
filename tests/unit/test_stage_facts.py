"""Per-stage facts: repeat stays summed, the latest stay, and as of a past time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.stage_facts import StayTimes, stage_facts

T0 = datetime(2026, 9, 1, tzinfo=UTC)
DAY = timedelta(days=1)
STAYS = [
    StayTimes("discovery", T0, T0 + 5 * DAY),
    StayTimes("qualification", T0 + 5 * DAY, T0 + 8 * DAY),
    StayTimes("discovery", T0 + 8 * DAY, T0 + 10 * DAY),  # regressed, then back
    StayTimes("qualification", T0 + 10 * DAY, None),
]


def test_repeat_stays_sum_and_the_latest_counts_until_now() -> None:
    facts = {f.stage: f for f in stage_facts(STAYS, T0 + 14 * DAY)}
    discovery, qualification = facts["discovery"], facts["qualification"]
    assert (discovery.stays, discovery.cumulative_days, discovery.latest_days) == (2, 7.0, 2.0)
    assert (discovery.first_entered_at, discovery.last_exited_at) == (T0, T0 + 10 * DAY)
    assert qualification.current and qualification.last_exited_at is None
    assert (qualification.cumulative_days, qualification.latest_days) == (7.0, 4.0)


def test_as_of_a_past_time_later_stays_are_unseen_and_a_later_exit_is_open() -> None:
    facts = {f.stage: f for f in stage_facts(STAYS, T0 + 6 * DAY)}
    assert set(facts) == {"discovery", "qualification"}
    assert facts["discovery"].cumulative_days == 5.0 and not facts["discovery"].current
    assert facts["qualification"].current and facts["qualification"].latest_days == 1.0
