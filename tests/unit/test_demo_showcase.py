"""The demo's pipeline, played on the bare domain: plausible rates, and at least one case of
every flag kind and every pipeline red flag at its end, so a newcomer sees them all."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from app.domain.errors import DomainError
from app.domain.flags import KINDS, Subject, advance, evaluate
from app.domain.periods import Period
from app.domain.pipeline import BUILT_IN
from app.domain.pipeline_facts import History, facts_of
from app.domain.pipeline_health import RULES, assess
from app.domain.state import DealState, Recorded
from app.service.demo_showcase import NEGLECTED_SHARE, QUARTER_TARGET, showcase
from app.service.simulation import OWNERS, decide_step
from app.service.simulation import History as Generated

END = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def play(seed: int = 7) -> tuple[dict[UUID, Subject], dict[UUID, datetime], Counter[str]]:
    history = Generated(
        deals=200,
        seed=seed,
        days=120,
        end=END,
        scripted=showcase(END),
        neglected_share=NEGLECTED_SHARE,
    )
    subjects: dict[UUID, Subject] = {}
    won_at: dict[UUID, datetime] = {}
    counts: Counter[str] = Counter()
    while (step := history.next()) is not None:
        before = history.states.get(step.deal_id)
        try:
            events, after = decide_step(before, step)
        except DomainError:
            assert before is not None
            history.settled(step, before)
            continue
        subject = subjects.get(step.deal_id) or Subject(DealState(deal_id=step.deal_id))
        version = before.version if before else 0
        for n, event in enumerate(events, start=1):
            occurred = getattr(event, "occurred_at", None) or step.at
            subject = advance(subject, Recorded(event, version + n, occurred, step.at))
            counts[event.type] += 1
            if event.type == "StageAdvanced" and getattr(event, "override", None):
                counts["override"] += 1
            if event.type == "DealWon":
                won_at[step.deal_id] = step.at
        subjects[step.deal_id] = subject
        history.settled(step, after)
    return subjects, won_at, counts


def test_the_demo_shows_every_flag_and_every_red_flag_at_plausible_rates() -> None:
    subjects, won_at, counts = play()
    states = [s.state for s in subjects.values()]
    status = Counter(s.status for s in states)
    closed = status["won"] + status["disqualified"]
    assert 0.15 <= status["won"] / closed <= 0.30
    open_stages = Counter(s.stage for s in states if s.status == "open")
    assert set(open_stages) == {"discovery", "qualification", "proposal", "negotiation", "closing"}
    assert counts["StageRegressed"] < 0.25 * counts["StageAdvanced"]
    assert counts["override"] < 0.15 * counts["StageAdvanced"]
    lengths = {s.nurture_resume_on for s in states if s.nurture_resume_on}
    assert len(lengths) > 5  # nurture lengths vary

    kinds = {f.kind for s in subjects.values() for f in evaluate(s, END)}
    assert kinds == set(KINDS)

    period = Period.quarter_of(END.date())
    won = Decimal(0)
    for deal_id, at in won_at.items():
        state = subjects[deal_id].state
        if at.date() in period:
            won += state.amount or 0
    facts = [facts_of(s) for s in states]
    figures = History(
        early_won=status["won"],
        early_closed=closed,  # every deal opens in discovery: all were early
        won=status["won"],
        closed=closed,
        won_in_period=won,
        created_value=sum(
            (f.value for f in facts if END - timedelta(days=90) < f.opened_at <= END),
            Decimal(0),
        ),
        target=QUARTER_TARGET * len(OWNERS),
    )
    open_facts = [facts_of(s) for s in states if s.status == "open"]
    health = assess(open_facts, END, BUILT_IN, figures, period)
    assert {f.rule for f in health.findings} == set(RULES)
