"""A seeded, plausible stream of commands against deals: for tests, the demo and benchmarks.

`next_command` is pure (state and a random source in, a command out); `run_workload` drives
it through the real service layer, so every event it produces was decided like any other.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from app.domain import commands as c
from app.domain.decide import Actor, Context, decide, evidence_needed
from app.domain.errors import DomainError
from app.domain.events import DomainEvent, EvidenceSource
from app.domain.pipeline import (
    ACTIVITY_TYPES,
    BLOCKER_CATEGORIES,
    BUILT_IN,
    DISQUALIFICATION_REASONS,
    EVIDENCE_KINDS,
    NURTURE,
    REGRESSION_TRIGGERS,
    STAKEHOLDER_ROLES,
)
from app.domain.state import DealState, Recorded, fold
from app.events.store import EventStore
from app.service.deals import CommandContext, DealService
from app.service.heads import HeadCache

OWNERS = ("ann.rep", "bob.rep", "cho.rep", "dev.rep", "eve.rep")
MANAGER = Actor("maria.manager", "manager")
SYSTEMS = ("gmail", "calendar", "gong", "hubspot")


def _uuid(rng: random.Random) -> UUID:
    return UUID(int=rng.getrandbits(128), version=4)


def open_command(rng: random.Random, index: int, today: date) -> c.OpenDeal:
    return c.OpenDeal(
        name=f"Deal {index:05d}",
        owner=rng.choice(OWNERS),
        account=f"Account {rng.randrange(1, 400):03d}",
        amount=Decimal(rng.randrange(5, 500) * 1000),
        currency="USD",
        close_date=today + timedelta(days=rng.randrange(14, 180)),
    )


def next_command(
    rng: random.Random, state: DealState, now: datetime
) -> tuple[c.Command, Actor] | None:
    """A command someone might plausibly send this deal now; None once it is closed.

    Mostly buyer activity and evidence for what the stage still lacks, then advances; now and
    then a regression, nurture, retraction, blocker or disqualification. Some commands are
    refused by the decider (as in life); callers count those.
    """
    if state.is_terminal:
        return None
    rep = Actor(state.owner, "rep")
    if state.status == NURTURE:
        if rng.random() < 0.85:
            return c.ReactivateDeal(), rep
        return c.DisqualifyDeal(reason=rng.choice(DISQUALIFICATION_REASONS)), rep
    pipeline = state.pipeline_in(BUILT_IN)  # simulated deals open on the built-in default
    stages = pipeline.stage_keys
    here = stages.index(state.stage)
    stage = pipeline.stage(state.stage)
    target = stages[here + 1] if here + 1 < len(stages) else None
    _, unmet = evidence_needed(state, target, pipeline)
    live_evidence = [i for i, item in state.evidence.items() if not item.retracted]
    open_blockers = list(state.blockers)
    choices: list[tuple[float, Callable[[], tuple[c.Command, Actor]]]] = [
        (
            30,
            lambda: (
                c.RecordBuyerActivity(
                    activity_type=rng.choice(ACTIVITY_TYPES),
                    occurred_at=now - timedelta(minutes=rng.randrange(0, 600)),
                    details={"system": rng.choice(SYSTEMS)},
                ),
                rep,
            ),
        ),
        (
            25 if unmet else 3,
            lambda: (
                c.RecordEvidence(
                    evidence_id=_uuid(rng),
                    kind=rng.choice(EVIDENCE_KINDS),
                    criteria=(rng.choice(unmet or [k.key for k in stage.exit_criteria]),),
                    summary="buyer said so, in writing",
                    occurred_at=now - timedelta(hours=rng.randrange(0, 48)),
                    source=EvidenceSource(
                        system=rng.choice(SYSTEMS), ref=f"m-{rng.getrandbits(32)}"
                    ),
                ),
                rep,
            ),
        ),
        (
            20 if not unmet else 2,
            lambda: (
                (c.WinDeal(), rep)
                if here == len(stages) - 1
                else (c.AdvanceStage(to_stage=stages[here + 1]), rep)
            ),
        ),
        (
            0.25,  # overrides: a minority of exits, as a manager's judgement should be
            lambda: (
                (c.WinDeal(override_reason="signed on paper"), MANAGER)
                if here == len(stages) - 1
                else (
                    c.AdvanceStage(to_stage=stages[here + 1], override_reason="exec sponsor call"),
                    MANAGER,
                )
            ),
        ),
        (
            0.5 if here > 0 else 0,  # regressions: a minority of stays, not half of them
            lambda: (
                c.RegressStage(
                    to_stage=stages[rng.randrange(0, here)],
                    trigger=rng.choice(REGRESSION_TRIGGERS),
                ),
                rep,
            ),
        ),
        (
            0.3,
            lambda: (
                c.NurtureDeal(
                    reason="budget next year",
                    resume_on=now.date() + timedelta(rng.randrange(14, 150)),
                ),
                rep,
            ),
        ),
        # Early deals are dropped more readily than late ones.
        (
            0.75 if here < 2 else 0.4,
            lambda: (c.DisqualifyDeal(reason=rng.choice(DISQUALIFICATION_REASONS)), rep),
        ),
        (
            3 if live_evidence else 0,
            lambda: (
                c.RetractEvidence(evidence_id=rng.choice(live_evidence), reason="misread"),
                rep,
            ),
        ),
        (
            3,
            lambda: (
                c.RaiseBlocker(
                    blocker_id=_uuid(rng),
                    category=rng.choice(BLOCKER_CATEGORIES),
                    description="waiting on the buyer",
                ),
                rep,
            ),
        ),
        (
            4 if open_blockers else 0,
            lambda: (
                c.ResolveBlocker(blocker_id=rng.choice(open_blockers), resolution="cleared"),
                rep,
            ),
        ),
        (
            4 if not state.has_field("economic_buyer") else 1,
            lambda: (
                c.AddStakeholder(
                    stakeholder_id=_uuid(rng),
                    name=f"Buyer {rng.randrange(1000)}",
                    # Reps chase the economic buyer the next stage needs.
                    role="economic_buyer"
                    if not state.has_field("economic_buyer") and rng.random() < 0.5
                    else rng.choice(STAKEHOLDER_ROLES),
                ),
                rep,
            ),
        ),
        (
            2,
            lambda: (
                c.SetNextStep(
                    description="follow up", due_date=now.date() + timedelta(rng.randrange(1, 14))
                ),
                rep,
            ),
        ),
        (2 if state.next_step else 0, lambda: (c.CompleteNextStep(), rep)),
        (1, lambda: (c.ChangeDeal(amount=Decimal(rng.randrange(5, 500) * 1000)), rep)),
    ]
    weights = [weight for weight, _ in choices]
    _, make = rng.choices(choices, weights=weights)[0]
    return make()


@dataclass
class WorkloadResult:
    deals: list[UUID] = field(default_factory=list)
    executed: int = 0
    refused: int = 0
    events: int = 0
    last_position: int = 0


async def run_workload(
    service: DealService,
    *,
    deals: int,
    commands: int,
    seed: int = 0,
    writers: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> WorkloadResult:
    """Open `deals`, then send `commands` commands to random open ones from `writers` tasks.

    Writers share deals, so they race; the service's retries settle that. Refusals by the
    decider are counted, not raised.
    """
    rng = random.Random(seed)
    result = WorkloadResult()
    states: dict[UUID, DealState] = {}
    today = datetime.now(UTC).date()
    for index in range(deals):
        deal_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        opened = await service.execute(
            deal_id, open_command(rng, index, today), CommandContext(Actor("crm", "rep"))
        )
        states[deal_id] = opened.state
        result.deals.append(deal_id)
        result.events += opened.event_count
        result.last_position = max(result.last_position, opened.position or 0)
    remaining = commands

    async def writer(wrng: random.Random) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            open_ids = [i for i, s in states.items() if not s.is_terminal]
            if not open_ids:
                return
            # Attention is skewed, as in life: a few hot deals get most of it and close.
            deal_id = open_ids[int(len(open_ids) * wrng.random() ** 3)]
            picked = next_command(wrng, states[deal_id], datetime.now(UTC))
            if picked is None:
                continue
            command, actor = picked
            try:
                done = await service.execute(deal_id, command, CommandContext(actor))
            except DomainError:
                result.refused += 1
                states[deal_id] = await service.load(deal_id)
                continue
            result.executed += 1
            result.events += done.event_count
            result.last_position = max(result.last_position, done.position or 0)
            if done.state.version >= states[deal_id].version:
                states[deal_id] = done.state
            if on_progress is not None:
                on_progress(commands - remaining)

    await asyncio.gather(*(writer(random.Random(rng.getrandbits(64))) for _ in range(writers)))
    return result


# Commands a deal takes, on average, to earn a stage with the weights of `next_command`
# (measured on generated histories): pacing each deal's commands at expected_days / this
# makes stage durations come out near the pipeline's expected days.
COMMANDS_PER_STAGE = 14
SCRIPTED = -2  # a queue entry that is a scripted step, not a deal's next random command


@dataclass(frozen=True, order=True)
class Step:
    """One command of a simulated history, at its simulated time."""

    at: datetime
    seq: int
    deal_id: UUID = field(compare=False)
    command: c.Command = field(compare=False)
    actor: Actor = field(compare=False)


class History:
    """Months of pipeline in simulated time: deals open spread over `days` before `end`, then
    each is acted on at its own rhythm (a per-deal pace around the stage's expected days)
    until it closes or `end` arrives. Steps come in time order across deals; the caller
    decides each (through the service, or the bare domain) and reports the new state.
    Seeded: the same seed gives the same history.
    """

    def __init__(
        self,
        *,
        deals: int,
        seed: int,
        days: float,
        end: datetime,
        scripted: Sequence[Step] = (),
        neglected_share: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.end = end
        self.states: dict[UUID, DealState] = {}
        self.pace: dict[UUID, float] = {}
        self.neglected_from: dict[UUID, datetime] = {}
        """Deals their rep stops working after a while (no command after that time)."""
        self._queue: list[tuple[datetime, int, UUID, int]] = []
        self._seq = 0
        self._scripted: dict[int, Step] = {}
        self.scripted_deals = {step.deal_id for step in scripted}
        start = end - timedelta(days=days)
        openings = sorted(start + timedelta(days=self.rng.uniform(0, days)) for _ in range(deals))
        for index, at in enumerate(openings):
            deal_id = _uuid(self.rng)
            self.pace[deal_id] = self.rng.lognormvariate(0, 0.4)
            if self.rng.random() < neglected_share:
                self.neglected_from[deal_id] = at + timedelta(days=self.rng.uniform(2, 40))
            self._push(at, deal_id, index)
        for step in scripted:
            self._push(step.at, step.deal_id, SCRIPTED)
            self._scripted[self._seq] = step

    def _push(self, at: datetime, deal_id: UUID, index: int = -1) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, deal_id, index))

    def next(self) -> Step | None:
        """The next command due, or None when every deal is closed or at `end`."""
        while self._queue:
            at, seq, deal_id, index = heapq.heappop(self._queue)
            if index == SCRIPTED:
                return self._scripted.pop(seq)
            if index >= 0:
                command: c.Command = open_command(self.rng, index, at.date())
                return Step(at, seq, deal_id, command, Actor("crm", "rep"))
            picked = next_command(self.rng, self.states[deal_id], at)
            if picked is not None:
                return Step(at, seq, deal_id, *picked)
        return None

    def settled(self, step: Step, state: DealState) -> None:
        """The deal's state after `step` (unchanged if it was refused); schedules its next."""
        self.states[step.deal_id] = state
        if state.is_terminal or step.deal_id in self.scripted_deals:
            return  # scripted deals take only their script
        if state.status == NURTURE and state.nurture_resume_on is not None:
            resume = datetime.combine(state.nurture_resume_on, step.at.timetz())
            gap = max(resume - step.at, timedelta(hours=1))
        else:
            expected = state.pipeline_in(BUILT_IN).stage(state.stage).expected_days
            mean_days = expected / COMMANDS_PER_STAGE * self.pace[step.deal_id]
            gap = timedelta(days=self.rng.expovariate(1 / mean_days))
        at = step.at + max(gap, timedelta(minutes=1))
        neglected = self.neglected_from.get(step.deal_id)
        if at <= self.end and (neglected is None or at < neglected):
            self._push(at, step.deal_id)


async def lay_down_history(
    store: EventStore,
    *,
    deals: int,
    seed: int = 0,
    days: float = 120,
    end: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
    scripted: Callable[[datetime], Sequence[Step]] | None = None,
    neglected_share: float = 0.0,
) -> WorkloadResult:
    """Write a `History` through the real service, on a simulated clock (see DealService);
    `scripted` gives steps to weave in, by the history's end time."""
    end = end or datetime.now(UTC)
    history = History(
        deals=deals,
        seed=seed,
        days=days,
        end=end,
        scripted=scripted(end) if scripted else (),
        neglected_share=neglected_share,
    )
    clock = [history.end]
    service = DealService(store, clock=lambda: clock[0], heads=HeadCache())
    result = WorkloadResult()
    while (step := history.next()) is not None:
        clock[0] = step.at
        try:
            done = await service.execute(step.deal_id, step.command, CommandContext(step.actor))
        except DomainError:
            result.refused += 1
            history.settled(step, history.states[step.deal_id])
            continue
        if step.deal_id not in history.states:
            result.deals.append(step.deal_id)
        result.executed += 1
        result.events += done.event_count
        result.last_position = max(result.last_position, done.position or 0)
        history.settled(step, done.state)
        if on_progress is not None:
            on_progress(result.executed + result.refused)
    return result


def decide_step(state: DealState | None, step: Step) -> tuple[list[DomainEvent], DealState]:
    """Decide a step on the bare domain, no I/O: its events and the deal's state after them
    (recorded at the step's time). Raises DomainError when the rules refuse it."""
    before = state if state is not None else fold(step.deal_id, [])
    events = decide(before, step.command, Context(now=step.at, actor=step.actor))
    history = [
        Recorded(event, before.version + n, getattr(event, "occurred_at", None) or step.at, step.at)
        for n, event in enumerate(events, start=1)
    ]
    return events, fold(step.deal_id, history, before)
