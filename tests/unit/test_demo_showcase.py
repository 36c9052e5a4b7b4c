"""The demo's pipeline, played on the bare domain: plausible rates, and at least one case of
every flag kind at its end, so a newcomer sees them all (its pipeline red flags, summed in
SQL, are checked through HTTP in tests/integration/test_demo_red_flags.py)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from uuid import UUID

from app.domain.errors import DomainError
from app.domain.flags import KINDS, Subject, advance, evaluate
from app.domain.state import DealState, Recorded
from app.service.demo_showcase import NEGLECTED_SHARE, showcase
from app.service.simulation import History as Generated
from app.service.simulation import decide_step

END = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def play(seed: int = 7) -> tuple[dict[UUID, Subject], Counter[str]]:
    history = Generated(
        deals=200,
        seed=seed,
        days=120,
        end=END,
        scripted=showcase(END),
        neglected_share=NEGLECTED_SHARE,
    )
    subjects: dict[UUID, Subject] = {}
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
        subjects[step.deal_id] = subject
        history.settled(step, after)
    return subjects, counts


def test_the_demo_shows_every_flag_kind_at_plausible_rates() -> None:
    subjects, counts = play()
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
