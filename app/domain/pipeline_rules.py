"""What makes a pipeline document valid, and what changed between two versions. Pure.

Validation runs when a version is published, never when a stored one is read: a rule added
later must not make history unreadable.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.domain.pipeline import (
    REQUIRED_FIELD_KEYS,
    RESERVED_STAGE_KEYS,
    PipelineDocument,
    StallThresholds,
)


def _duplicates(keys: Iterable[str]) -> list[str]:
    return sorted(key for key, n in Counter(keys).items() if n > 1)


def problems(document: PipelineDocument) -> list[str]:
    """Everything wrong with `document`, each naming where (empty: it is valid)."""
    found: list[str] = []
    stages = document.stages
    if not stages:
        found.append("stages: a pipeline needs at least one stage")
    for key in _duplicates(stage.key for stage in stages):
        found.append(f"stages: duplicate stage key {key!r}")
    for stage in stages:
        if stage.key in RESERVED_STAGE_KEYS:
            found.append(
                f"stages.{stage.key}: {stage.key!r} is reserved"
                f" ({', '.join(RESERVED_STAGE_KEYS)} are deal outcomes or states)"
            )
        if not stage.exit_criteria:
            found.append(f"stages.{stage.key}.exit_criteria: a stage needs at least one criterion")
        for name in stage.required_fields:
            if name not in REQUIRED_FIELD_KEYS:
                found.append(
                    f"stages.{stage.key}.required_fields: unknown field {name!r}"
                    f" (one of: {', '.join(REQUIRED_FIELD_KEYS)})"
                )
        for name in _duplicates(stage.required_fields):
            found.append(f"stages.{stage.key}.required_fields: {name!r} is listed twice")
        found += _stall_problems(stage.key, stage.stall)
    for before, after in itertools.pairwise(stages):
        if after.probability <= before.probability:
            found.append(
                f"stages.{after.key}.probability: {after.probability} must be above"
                f" {before.key}'s {before.probability} (probabilities rise stage by stage)"
            )
    criteria = [c.key for stage in stages for c in stage.exit_criteria]
    for key in _duplicates(criteria):
        found.append(f"exit_criteria: duplicate criterion key {key!r} (keys are pipeline-wide)")
    known_stages, known_criteria = set(document.stage_keys), set(criteria)
    for key in document.late_stages:
        if key not in known_stages:
            found.append(f"late_stages: unknown stage {key!r}")
    found += _list_problems(
        "regression_triggers", [t.key for t in document.regression_triggers], required=False
    )
    for trigger in document.regression_triggers:
        for key in trigger.reopens:
            if key not in known_criteria:
                found.append(
                    f"regression_triggers.{trigger.key}.reopens: unknown criterion {key!r}"
                )
        if trigger.reopens and trigger.reopens_target_and_later:
            found.append(
                f"regression_triggers.{trigger.key}: give reopens or"
                " reopens_target_and_later, not both"
            )
    found += _list_problems(
        "disqualification_reasons", [r.key for r in document.disqualification_reasons]
    )
    found += _list_problems("blocker_categories", [b.key for b in document.blocker_categories])
    return found


def _list_problems(where: str, keys: Sequence[str], *, required: bool = True) -> list[str]:
    found = [f"{where}: duplicate key {key!r}" for key in _duplicates(keys)]
    if required and not keys:
        found.append(f"{where}: at least one is needed")
    return found


def _stall_problems(stage: str, stall: StallThresholds) -> list[str]:
    warning, critical = stall.slow_warning_ratio, stall.slow_critical_ratio
    if warning is not None and critical is not None and critical < warning:
        return [
            f"stages.{stage}.stall: slow_critical_ratio {critical} is below"
            f" slow_warning_ratio {warning}"
        ]
    return []


@dataclass(frozen=True)
class Change:
    """One difference between two versions: where, and the value before and after
    (None where it was added or removed)."""

    path: str
    before: Any
    after: Any


def diff(old: PipelineDocument, new: PipelineDocument) -> list[Change]:
    """What changed from `old` to `new`, path by path; lists of keyed items (stages,
    criteria, triggers, reasons) are matched by key, so a reordering reads as one change."""
    before = old.model_dump(mode="json", exclude={"version"})
    after = new.model_dump(mode="json", exclude={"version"})
    return list(_diff("", before, after))


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """A list of dicts with distinct `key`s, as a dict by key (else None)."""
    if not all(isinstance(item, dict) and "key" in item for item in items):
        return None
    keyed = {item["key"]: item for item in items}
    return keyed if len(keyed) == len(items) else None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _diff(path: str, before: Any, after: Any) -> Iterable[Change]:
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for name in [*before, *(k for k in after if k not in before)]:
            yield from _diff(_join(path, name), before.get(name), after.get(name))
        return
    if isinstance(before, list) and isinstance(after, list):
        old, new = _keyed(before), _keyed(after)
        if old is not None and new is not None:
            if [k for k in old if k in new] != [k for k in new if k in old]:
                yield Change(_join(path, "(order)"), list(old), list(new))
            for key in [*old, *(k for k in new if k not in old)]:
                yield from _diff(_join(path, key), old.get(key), new.get(key))
            return
    yield Change(path, before, after)
