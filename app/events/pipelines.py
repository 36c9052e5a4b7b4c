"""The pipeline versions stored in the log, loaded on demand into a process-wide catalog.

Versions are immutable and each key's stream only grows, so what is held stays true: a
lookup reads a pipeline's stream only for versions it has not seen (after the highest held,
by its primary key), never the whole log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from uuid import UUID

import asyncpg

from app.domain.identifiers import pipeline_stream_id
from app.domain.pipeline import BUILT_IN, Catalog, Pipeline, UnknownPipelineVersion
from app.domain.pipeline_versions import parse_pipeline_event
from app.events.log import RecordedEvent
from app.events.store import read_stream_on

StreamReader = Callable[[UUID, int], Awaitable[Sequence[RecordedEvent]]]
"""Reads a stream's events after a version."""


def pipelines_of(events: Iterable[RecordedEvent]) -> list[Pipeline]:
    """The versions a pipeline stream's events publish, each checked against its place."""
    found = []
    for event in events:
        pipeline = parse_pipeline_event(event.type, event.schema_version, event.data).pipeline
        if pipeline.version != event.version:
            raise ValueError(
                f"stream {event.stream_id} v{event.version} holds pipeline version"
                f" {pipeline.version}: the log is inconsistent"
            )
        found.append(pipeline)
    return found


def reader_on(connection: asyncpg.Connection) -> StreamReader:
    """A StreamReader on an open connection (a projection's, inside its batch)."""

    async def read(stream_id: UUID, after_version: int) -> Sequence[RecordedEvent]:
        return await read_stream_on(connection, stream_id, after_version=after_version)

    return read


class PipelineVersions:
    """The catalog this process knows: the built-in default, plus what it has read."""

    def __init__(self) -> None:
        self.catalog: Catalog = BUILT_IN

    async def refresh(self, key: str, read: StreamReader) -> Catalog:
        """The catalog with every version of `key` the log holds now."""
        events = await read(pipeline_stream_id(key), self.catalog.newest(key))
        if events:
            self.catalog = self.catalog.with_versions(key, pipelines_of(events))
        return self.catalog

    async def ensure(self, wanted: Iterable[tuple[str, int]], read: StreamReader) -> Catalog:
        """A catalog holding every (key, version) in `wanted`; UnknownPipelineVersion when
        the log has no such version."""
        for key, version in sorted(set(wanted)):
            if not self.catalog.has(key, version):
                await self.refresh(key, read)
                if not self.catalog.has(key, version):
                    raise UnknownPipelineVersion(key, version)
        return self.catalog
