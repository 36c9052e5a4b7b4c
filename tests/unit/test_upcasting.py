"""Upcasting stored events: every step from the stored version to the current one, in order."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from app.domain import events as e
from app.domain.events import EVENT_TYPES, UPCASTERS, UnknownSchemaVersion, parse_event, upcast


def test_upcasting_runs_every_step_in_order_and_refuses_what_it_cannot_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class V3(e.NextStepCompleted):
        SCHEMA_VERSION: ClassVar[int] = 3
        outcome: str

    steps: list[int] = []

    def step_1(data: dict[str, Any]) -> dict[str, Any]:
        steps.append(1)
        return {**data, "description": data["description"].strip()}

    def step_2(data: dict[str, Any]) -> dict[str, Any]:
        steps.append(2)
        return {**data, "outcome": "done"}

    monkeypatch.setitem(EVENT_TYPES, "NextStepCompleted", V3)
    monkeypatch.setitem(UPCASTERS, ("NextStepCompleted", 1), step_1)
    monkeypatch.setitem(UPCASTERS, ("NextStepCompleted", 2), step_2)
    assert upcast("NextStepCompleted", 1, {"description": " call "}) == {
        "description": "call",
        "outcome": "done",
    }
    assert steps == [1, 2]
    event = parse_event("NextStepCompleted", 2, {"description": "call"})
    assert event == V3(description="call", outcome="done")
    with pytest.raises(UnknownSchemaVersion, match="newer"):
        parse_event("NextStepCompleted", 4, {"description": "call", "outcome": "done"})
    monkeypatch.delitem(UPCASTERS, ("NextStepCompleted", 1))
    with pytest.raises(UnknownSchemaVersion, match="no upcaster"):
        parse_event("NextStepCompleted", 1, {"description": "call"})
    with pytest.raises(UnknownSchemaVersion, match="unknown event type"):
        parse_event("DealTeleported", 1, {})
