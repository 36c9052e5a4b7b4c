"""given(...).when(...).then(...) over the pure decider."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from app.domain.commands import Command
from app.domain.decide import Actor, Context, decide
from app.domain.errors import DomainError
from app.domain.events import DomainEvent
from app.domain.pipeline import BUILT_IN, Catalog
from app.domain.state import DealState, Recorded, fold

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
REP = Actor(id="rick", role="rep")
MANAGER = Actor(id="maria", role="manager")


@dataclass
class Scenario:
    deal_id: UUID = field(default_factory=uuid4)
    history: list[DomainEvent] = field(default_factory=list)
    actor: Actor = REP
    pipelines: Catalog = BUILT_IN

    def under(self, pipelines: Catalog) -> Scenario:
        """The same history, judged with these pipeline versions known."""
        self.pipelines = pipelines
        return self

    def state(self) -> DealState:
        return fold(
            self.deal_id,
            [Recorded(event, i, NOW, NOW) for i, event in enumerate(self.history, start=1)],
            pipelines=self.pipelines,
        )

    def when(self, command: Command, actor: Actor | None = None) -> Outcome:
        state = self.state()
        context = Context(now=NOW, actor=actor or self.actor, pipelines=self.pipelines)
        try:
            events = decide(state, command, context)
        except DomainError as error:
            return Outcome(state, [], error)
        return Outcome(state, events, None)


@dataclass
class Outcome:
    state: DealState
    events: list[DomainEvent]
    error: DomainError | None

    def then(self, *expected: type) -> list[DomainEvent]:
        assert self.error is None, f"refused: {self.error}"
        assert [type(event) for event in self.events] == list(expected)
        return self.events

    def then_refused(self, error_type: type[DomainError]) -> DomainError:
        assert self.error is not None, f"accepted: {self.events}"
        with pytest.raises(error_type):
            raise self.error
        return self.error


def given(*history: DomainEvent) -> Scenario:
    return Scenario(history=list(history))
