"""Pipeline commands: publish a version (create or revise), move open deals to a version.

Publishing is decided purely (app.domain.pipeline_versions) on the pipeline's stream and
appended after the version it was decided on; a lost race is decided again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from app.domain.commands import MigrateDeal
from app.domain.errors import DomainError, PipelineNotFound, PipelineVersionConflict, UnknownValue
from app.domain.events import event_data
from app.domain.identifiers import pipeline_stream_id
from app.domain.pipeline import BUILT_IN, Pipeline
from app.domain.pipeline_versions import PublishPipeline, decide_publish
from app.events.log import NewEvent, VersionConflict
from app.events.pipelines import pipelines_of
from app.projections.deals import open_deals_on
from app.service.deals import MAX_ATTEMPTS, CommandContext, DealService


@dataclass(frozen=True)
class Published:
    pipeline: Pipeline
    """The latest version after the command."""
    changed: bool
    """False: the document equals the latest version, nothing was written."""
    position: int | None


@dataclass(frozen=True)
class Moved:
    deal_id: UUID
    from_version: int
    from_stage: str
    to_stage: str
    position: int | None


@dataclass(frozen=True)
class Migration:
    to_version: int
    moved: list[Moved] = field(default_factory=list)
    failed: list[tuple[UUID, dict[str, Any]]] = field(default_factory=list)
    """Deals the command refused, each with its problem."""
    more: bool = False
    """More open deals are on other versions than `limit` allowed: call again."""


class PipelineService:
    def __init__(self, deals: DealService) -> None:
        self.deals = deals
        self.store = deals.store

    async def versions(self, key: str) -> tuple[Pipeline, ...]:
        """Every version of `key`, oldest first (PipelineNotFound: none)."""
        catalog = await self.deals.pipelines.refresh(key, self.deals.read_stream_after)
        found = catalog.versions.get(key, ())
        if not found:
            known = ", ".join(await self.deals.pipeline_keys())
            raise PipelineNotFound(f"no pipeline {key!r}; known: {known}", key=key)
        return found

    async def version(self, key: str, version: int) -> Pipeline:
        found = await self.versions(key)
        if not 1 <= version <= len(found):
            raise PipelineNotFound(
                f"pipeline {key!r} has versions 1 to {len(found)}, not {version}",
                key=key,
                latest_version=len(found),
            )
        return found[version - 1]

    async def publish(self, command: PublishPipeline, context: CommandContext) -> Published:
        """Publish the document as the next version of its pipeline (unless it equals the
        latest)."""
        key = command.document.key
        stream_id = pipeline_stream_id(key)
        for _ in range(MAX_ATTEMPTS):
            stored = tuple(pipelines_of(await self.store.read_stream(stream_id)))
            built_in = BUILT_IN.latest(key)
            events = decide_publish(stored, built_in, command)
            if not events:  # the latest version already says this
                latest = stored[-1] if stored else built_in
                assert latest is not None
                return Published(latest, False, None)
            metadata = DealService.metadata(context.actor, context.request_id, None)
            new_events = [
                NewEvent(
                    type=event.type,
                    data=event_data(event),
                    schema_version=event.schema_version,
                    metadata=metadata,
                )
                for event in events
            ]
            try:
                result = await self.store.append(stream_id, len(stored), new_events)
            except VersionConflict:
                if command.version is not None:
                    raise PipelineVersionConflict(
                        f"pipeline {key!r} changed while this version was decided",
                        latest_version=None,
                    ) from None
                continue
            await self.deals.pipelines.refresh(key, self.deals.read_stream_after)
            return Published(events[-1].pipeline, True, result.last_position)
        raise PipelineVersionConflict(f"pipeline {key!r} kept changing; try again")

    async def migrate(
        self,
        connection: asyncpg.Connection,
        key: str,
        command: MigrateDeal,
        context: CommandContext,
        limit: int,
    ) -> Migration:
        """Move the open deals of `key` (as the deals read model has them) that are on
        another version to `command.to_version` (None: the latest): one DealMigrated each,
        decided per deal; a deal the command refuses is reported, the others still move."""
        found = await self.versions(key)
        to_version = command.to_version or len(found)
        if not 1 <= to_version <= len(found):
            raise UnknownValue("to_version", to_version, [str(v) for v in range(1, len(found) + 1)])
        targets = await open_deals_on(connection, key, to_version, limit + 1)
        report = Migration(to_version=to_version, more=len(targets) > limit)
        for deal_id in targets[:limit]:
            per_deal = MigrateDeal(command.reason, to_version, command.stage_mapping)
            try:
                before = await self.deals.load(deal_id)
                result = await self.deals.execute(deal_id, per_deal, context)
            except DomainError as error:
                report.failed.append((deal_id, error.problem()))
                continue
            if result.event_count:
                report.moved.append(
                    Moved(
                        deal_id,
                        before.pipeline_version,
                        before.stage,
                        result.state.stage,
                        result.position,
                    )
                )
        return report
