"""The fast rebuild judges only the flag rules an event changed the inputs of (and every rule
after a deal's last event): over generated histories that gives exactly the flag rows of
judging every rule before and after every event, as the follower does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.errors import DomainError
from app.domain.flags import (
    TIMED,
    UNTIMED_INPUTS,
    FlagRules,
    Subject,
    advance,
    evaluate,
    next_change,
)
from app.domain.pipeline import BUILT_IN
from app.domain.state import DealState, Recorded, replace
from app.projections.flags import FlagRow, reconcile
from app.projections.replay import DealFold
from app.service.simulation import History, decide_step

END = datetime(2026, 6, 30, tzinfo=UTC)


def histories(seed: int, deals: int) -> dict[UUID, list[Recorded]]:
    """Each generated deal's events as the fold sees them, in version order."""
    history = History(deals=deals, seed=seed, days=150, end=END, neglected_share=0.3)
    recorded: dict[UUID, list[Recorded]] = {}
    while (step := history.next()) is not None:
        before = history.states.get(step.deal_id)
        try:
            events, after = decide_step(before, step)
        except DomainError:
            assert before is not None
            history.settled(step, before)
            continue
        version = before.version if before else 0
        mine = recorded.setdefault(step.deal_id, [])
        for n, event in enumerate(events, start=1):
            occurred = getattr(event, "occurred_at", None) or step.at
            mine.append(Recorded(event, version + n, occurred, step.at))
        history.settled(step, after)
    return recorded


def judged_at_every_event(
    deal_id: UUID, events: list[Recorded], rules: FlagRules
) -> dict[tuple[str, datetime], FlagRow]:
    """What FlagsProjection.apply writes: every rule just before and just after each event."""
    subject = Subject(DealState(deal_id=deal_id))
    open_rows: dict[str, FlagRow] = {}
    final: dict[tuple[str, datetime], FlagRow] = {}
    for recorded in events:
        at = recorded.recorded_at
        written = []
        if subject.state.exists:
            before = evaluate(subject, at, rules, BUILT_IN)
            written += reconcile(deal_id, open_rows, before, at, clear=False)
        subject = advance(subject, recorded, BUILT_IN)
        written += reconcile(deal_id, open_rows, evaluate(subject, at, rules), at, clear=True)
        for row in written:
            if row.dropped:
                final.pop((row.kind, row.raised_at), None)
            else:
                final[(row.kind, row.raised_at)] = row
    return final


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**20),
    rules=st.builds(
        FlagRules,
        inactive_days=st.sampled_from([2.0, 7.0, 15.0]),
        ghosting_multiplier=st.sampled_from([1.5, 3.0]),
        stuck_blocker_days=st.sampled_from([3.0, 14.0]),
    ),
)
def test_judging_only_changed_rules_gives_the_rows_of_judging_every_rule(
    seed: int, rules: FlagRules
) -> None:
    for deal_id, events in histories(seed, deals=8).items():
        fold = DealFold(deal_id, rules)
        for position, recorded in enumerate(events, start=1):
            fold.add(position, recorded, BUILT_IN)
        written = [row for table, row in fold.rows() if table == "deal_flags"]
        expected = judged_at_every_event(deal_id, events, rules)
        assert len(written) == len(expected)
        assert fold.flags == expected


# Thresholds short enough for the generated histories to cross them often.
SHORT_RULES = st.builds(
    FlagRules,
    inactive_days=st.sampled_from([2.0, 7.0]),
    ghosting_multiplier=st.sampled_from([1.5, 3.0]),
    stuck_blocker_days=st.sampled_from([3.0, 14.0]),
)


def test_the_generated_histories_raise_and_clear_flags_of_every_time_rule() -> None:
    rows = [
        row
        for deal_id, events in histories(7, deals=40).items()
        for row in judged_at_every_event(deal_id, events, FlagRules()).values()
    ]
    cleared = {row.kind for row in rows if row.cleared_at is not None}
    assert {"inactive", "ghosting", "no_next_step", "slow_in_stage"} <= cleared
    assert {row.kind for row in rows} >= {"next_step_overdue", "stuck_blocker"}


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**20),
    rules=SHORT_RULES,
    fractions=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=4),
)
def test_no_flag_is_raised_or_turns_critical_before_the_next_change(
    seed: int, rules: FlagRules, fractions: list[float]
) -> None:
    """The sweep visits a deal at `next_change` only: until then, time alone changes none
    of its flags' kinds or severities; with no next change, none ever (checked a year on)."""
    second = timedelta(seconds=1)
    for deal_id, events in histories(seed, deals=6).items():
        subject = Subject(DealState(deal_id=deal_id))
        for recorded in events:
            subject = advance(subject, recorded, BUILT_IN)
            at = recorded.recorded_at
            now = {(f.kind, f.severity) for f in evaluate(subject, at, rules)}
            due = next_change(subject, at, rules)
            until = due - second if due is not None else at + timedelta(days=365)
            if until <= at:
                continue
            just_before = until - timedelta(microseconds=1)
            for t in [min(at + (until - at) * f, just_before) for f in fractions] + [just_before]:
                later = {(f.kind, f.severity) for f in evaluate(subject, t, rules)}
                assert later == now, (str(at), str(t), str(due))


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**20),
    rules=SHORT_RULES,
    days=st.lists(st.floats(0, 400), min_size=1, max_size=3),
)
def test_only_timed_kinds_change_with_time_and_they_read_no_untimed_input(
    seed: int, rules: FlagRules, days: list[float]
) -> None:
    """What the weekly review relies on when it judges a due deal from part of its subject:
    a flag of a kind outside TIMED stands later exactly as just after the deal's event, and
    the TIMED kinds come out the same without the state's UNTIMED_INPUTS."""
    for deal_id, events in histories(seed, deals=6).items():
        subject = Subject(DealState(deal_id=deal_id))
        for recorded in events:
            subject = advance(subject, recorded, BUILT_IN)
            at = recorded.recorded_at
            untimed = [f for f in evaluate(subject, at, rules) if f.kind not in TIMED]
            part = Subject(
                replace(subject.state, **{name: {} for name in UNTIMED_INPUTS}),
                subject.buyer_times,
                subject.no_next_step_since,
            )
            for t in [at + timedelta(days=d) for d in days]:
                flags = evaluate(subject, t, rules)
                assert [f for f in flags if f.kind not in TIMED] == untimed
                timed = [f for f in flags if f.kind in TIMED]
                assert evaluate(part, t, rules, kinds=TIMED) == timed
