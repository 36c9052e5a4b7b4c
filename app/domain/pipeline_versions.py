"""Pipeline versions as events: each published version is one `PipelineVersionDefined` in
the pipeline's own stream (hash-chained like a deal's), its stream version = its version.

Pure: `decide_publish` says which events publishing a document produces, or refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.domain.errors import (
    InvalidPipeline,
    InvalidRequest,
    PipelineExists,
    PipelineNotFound,
    PipelineVersionConflict,
)
from app.domain.events import Event, UnknownSchemaVersion
from app.domain.pipeline import Pipeline, PipelineDocument
from app.domain.pipeline_rules import problems


class PipelineVersionDefined(Event):
    type: Literal["PipelineVersionDefined"] = "PipelineVersionDefined"
    pipeline: Pipeline
    note: str | None = None


PIPELINE_EVENT_TYPES = frozenset({"PipelineVersionDefined"})
"""Event types of pipeline streams: deal folds and deal projections never see them."""


def parse_pipeline_event(
    type_: str, schema_version: int, data: dict[str, Any]
) -> PipelineVersionDefined:
    """A stored pipeline event, read back. New document fields get defaults, so version 1
    reads every document stored so far; a later shape raises the version with an upcaster
    here, as deal events do (app.domain.events)."""
    if type_ not in PIPELINE_EVENT_TYPES:
        raise ValueError(f"{type_!r} is not a pipeline event")
    if schema_version != PipelineVersionDefined.SCHEMA_VERSION:
        raise UnknownSchemaVersion(f"{type_} v{schema_version} is not readable by this code")
    return PipelineVersionDefined.model_validate({**data, "type": type_})


@dataclass(frozen=True)
class PublishPipeline:
    """Publish `document` as the next version of its pipeline."""

    document: PipelineDocument
    creating: bool
    """POST: the key must be new. PUT: the pipeline must exist (stored or built in)."""
    key: str | None = None
    """The key the caller addressed (PUT /v1/pipelines/{key}); must match the document's."""
    version: int | None = None
    """The version the caller means to create; another writer got there first if it is not
    the next one (409). None: whatever is next."""
    note: str | None = None


def decide_publish(
    stored: tuple[Pipeline, ...], built_in: Pipeline | None, command: PublishPipeline
) -> list[PipelineVersionDefined]:
    """The events publishing `command.document` writes after the `stored` versions of its
    key (`built_in`: the version 1 a fresh install has without any event). Empty when the
    document equals the latest version: nothing changes, nothing is written."""
    document = command.document
    if command.key is not None and command.key != document.key:
        raise InvalidRequest(
            f"the document's key {document.key!r} differs from the addressed {command.key!r}",
            field="key",
        )
    current = stored or ((built_in,) if built_in is not None else ())
    if command.creating and current:
        raise PipelineExists(
            f"pipeline {document.key!r} exists (version {len(current)});"
            f" PUT /v1/pipelines/{document.key} publishes a new version",
            latest_version=len(current),
        )
    if not command.creating and not current:
        raise PipelineNotFound(
            f"no pipeline {document.key!r}; POST /v1/pipelines creates it", key=document.key
        )
    found = problems(document)
    if found:
        raise InvalidPipeline(found)
    next_version = len(current) + 1
    if command.version is not None and command.version != next_version:
        raise PipelineVersionConflict(
            f"pipeline {document.key!r} is at version {len(current)}: the next version is"
            f" {next_version}, not {command.version}",
            latest_version=len(current),
        )
    content = document.model_dump(exclude={"version"})
    if current and current[-1].model_dump(exclude={"version"}) == content:
        return []
    published = Pipeline.model_validate({**content, "version": next_version})
    events = [PipelineVersionDefined(pipeline=published, note=command.note)]
    if not stored and built_in is not None:
        # The built-in version 1 enters the log before its first revision, so the log alone
        # says which rules every version judged by (code may change; the log does not).
        first = PipelineVersionDefined(pipeline=built_in, note="built-in version 1")
        events.insert(0, first)
    return events
