"""Every projection the service runs, by name."""

from __future__ import annotations

from app.domain.flags import FlagRules
from app.events.pipelines import PipelineVersions
from app.projections.activity import ActivityProjection
from app.projections.blockers import BlockersProjection
from app.projections.deals import DealsProjection
from app.projections.flags import FlagsProjection
from app.projections.log_tree import LogTree, log_tree_for
from app.projections.runner import Projection
from app.projections.stage_intervals import StageIntervalsProjection
from app.projections.webhook_outbox import NAME as OUTBOX
from app.projections.webhook_outbox import WebhookOutbox
from app.settings import Settings


def build_projections(
    rules: FlagRules | None = None, log_tree: LogTree | None = None
) -> dict[str, Projection]:
    """Every projection, sharing one cache of pipeline versions (one database per process:
    a cache must not outlive the database it was read from)."""
    versions = PipelineVersions()
    projections: tuple[Projection, ...] = (
        DealsProjection(versions),
        StageIntervalsProjection(),
        ActivityProjection(),
        FlagsProjection(rules, versions),
        BlockersProjection(),
        log_tree or LogTree(),  # without a signer it keeps the tree and signs nothing
    )
    return {p.name: p for p in projections}


def rules_of(settings: Settings) -> FlagRules:
    return FlagRules(
        slow_warning_ratio=settings.slow_warning_ratio,
        slow_critical_ratio=settings.slow_critical_ratio,
        inactive_days=settings.inactive_days,
        inactive_days_by_stage=settings.inactive_days_by_stage,
        stuck_blocker_days=settings.stuck_blocker_days,
        ghosting_multiplier=settings.ghosting_multiplier,
        ghosting_floor_days=settings.ghosting_floor_days,
    )


def projections_for(settings: Settings) -> dict[str, Projection]:
    return build_projections(rules_of(settings), log_tree_for(settings))


def followers_for(settings: Settings) -> list[Projection]:
    """What a projector follows the log with: every projection, and the webhook outbox
    (which is never rebuilt: that would send everything again)."""
    return [*projections_for(settings).values(), WebhookOutbox(settings.public_url)]


PROJECTIONS = build_projections()
FOLLOWERS: tuple[str, ...] = (*PROJECTIONS, OUTBOX)
"""The names of everything a projector follows the log with (for lag and stops)."""
