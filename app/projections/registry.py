"""Every projection the service runs, by name."""

from __future__ import annotations

from app.projections.activity import ActivityProjection
from app.projections.deals import DealsProjection
from app.projections.runner import Projection
from app.projections.stage_intervals import StageIntervalsProjection

PROJECTIONS: dict[str, Projection] = {
    p.name: p for p in (DealsProjection(), StageIntervalsProjection(), ActivityProjection())
}
