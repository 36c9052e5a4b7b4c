"""How a deal entered a stage, replayed from its own events: for auditors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from app.domain import events as e
from app.domain.pipeline import BUILT_IN, Catalog
from app.domain.state import DealState, Evidence, Recorded, evolve


@dataclass(frozen=True)
class Retraction:
    reason: str
    by: str
    recorded_at: datetime


@dataclass(frozen=True)
class EvidenceAtTheTime:
    evidence: Evidence
    recorded_by: str
    source: e.EvidenceSource | None
    retracted_later: Retraction | None = None


@dataclass(frozen=True)
class Entry:
    """One entry into the stage: the event that did it and the evidence it stood on."""

    event_type: str
    version: int
    from_stage: str | None
    recorded_at: datetime
    actor: str | None
    pipeline_version: int
    override: e.Override | None
    trigger: str | None
    criteria: dict[str, list[EvidenceAtTheTime]] = field(default_factory=dict)


def _enters(event: e.DomainEvent, stage: str) -> bool:
    match event:
        case e.DealOpened():
            return event.stage == stage
        case e.StageAdvanced() | e.StageRegressed() | e.DealReactivated():
            return event.to_stage == stage
        case e.DealWon():
            return stage == "won"
        case e.DealDisqualified():
            return stage == "disqualified"
        case e.DealNurtured():
            return stage == "nurture"
        case e.DealMigrated():
            return event.to_stage == stage and event.from_stage != stage
        case _:
            return False


def provenance(
    deal_id: UUID,
    history: list[Recorded],
    actors: dict[int, str],
    stage: str,
    pipelines: Catalog = BUILT_IN,
) -> list[Entry]:
    """Every entry into `stage`, with each criterion's evidence as it stood at that moment.

    `actors` maps versions to who recorded them (from event metadata).
    """
    recorded_evidence: dict[UUID, e.EvidenceRecorded] = {}
    retractions: dict[UUID, Retraction] = {}
    for item in history:
        if isinstance(item.event, e.EvidenceRecorded):
            recorded_evidence[item.event.evidence_id] = item.event
        if isinstance(item.event, e.EvidenceRetracted):
            retractions[item.event.evidence_id] = Retraction(
                item.event.reason, item.event.retracted_by, item.recorded_at
            )
    entries: list[Entry] = []
    state = DealState(deal_id=deal_id)
    for item in history:
        event = item.event
        if _enters(event, stage):
            entries.append(_entry(state, item, actors, recorded_evidence, retractions))
        state = evolve(state, item, pipelines)
    return entries


def _entry(
    before: DealState,
    item: Recorded,
    actors: dict[int, str],
    recorded_evidence: dict[UUID, e.EvidenceRecorded],
    retractions: dict[UUID, Retraction],
) -> Entry:
    event = item.event
    criteria: dict[str, list[EvidenceAtTheTime]] = {}
    if isinstance(event, e.StageAdvanced | e.DealWon):
        for key, ids in event.criteria.items():
            criteria[key] = [
                EvidenceAtTheTime(
                    evidence=before.evidence[evidence_id],
                    recorded_by=recorded_evidence[evidence_id].recorded_by,
                    source=recorded_evidence[evidence_id].source,
                    # Only retractions after this entry: at the time, the evidence stood.
                    retracted_later=retractions.get(evidence_id),
                )
                for evidence_id in ids
            ]
    return Entry(
        event_type=event.type,
        version=item.version,
        from_stage=getattr(event, "from_stage", None) or (before.stage or None),
        recorded_at=item.recorded_at,
        actor=actors.get(item.version),
        pipeline_version=event.to_version
        if isinstance(event, e.DealMigrated)
        else getattr(event, "pipeline_version", before.pipeline_version),
        override=getattr(event, "override", None),
        trigger=getattr(event, "trigger", None),
        criteria=criteria,
    )
