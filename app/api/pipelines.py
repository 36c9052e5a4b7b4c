"""Pipeline routes: read any version (every role), publish versions and move open deals to
one (admin). Thin: the rules are in app.domain.pipeline_versions and app.service.pipelines."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import require
from app.api.deps import (
    READ,
    ConnectionDep,
    IdempotencyKeyDep,
    MinPosition,
    RequestIdDep,
    ServiceDep,
    projected,
)
from app.api.json_bodies import ExactJsonRoute
from app.domain.commands import MigrateDeal
from app.domain.decide import Actor
from app.domain.errors import InvalidRequest
from app.domain.pipeline import Key, Pipeline, PipelineDocument
from app.domain.pipeline_rules import diff
from app.domain.pipeline_versions import PublishPipeline
from app.service import pipelines as service_pipelines
from app.service.deals import CommandContext
from app.service.pipelines import PipelineService

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, **PROBLEM}
    for code, text in {
        404: "No such pipeline or version",
        409: "The pipeline exists already, or another version was published first",
        422: "Invalid pipeline document (each problem named)",
    }.items()
}
router = APIRouter(
    prefix="/v1/pipelines", tags=["pipelines"], responses=ERRORS, route_class=ExactJsonRoute
)
PipelineKey = Annotated[str, Path(min_length=1, max_length=63, description="A pipeline's key")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]
Admin = Annotated[Actor, Depends(require("pipelines:write"))]


async def _pipelines(service: ServiceDep) -> PipelineService:
    return PipelineService(service)


Pipelines = Annotated[PipelineService, Depends(_pipelines)]


class PipelineBody(PipelineDocument):
    """A pipeline document to publish. `version`, if given, is the version you mean to
    create: another writer publishing first makes it a 409, not a silent overwrite."""

    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    note: str | None = Field(default=None, min_length=1, max_length=2000)
    """Why this version (kept with it in the log)."""

    def command(self, *, creating: bool, key: str | None = None) -> PublishPipeline:
        document = PipelineDocument.model_validate(self.model_dump(exclude={"version", "note"}))
        return PublishPipeline(document, creating, key, self.version, self.note)


class Published(BaseModel):
    changed: bool
    """False: the document equals the latest version; nothing was written."""
    position: int | None
    """The log position of the new version's event (None when nothing changed)."""
    pipeline: Pipeline


class PipelineSummary(BaseModel):
    key: str
    label: str
    latest_version: int
    stages: list[str]


class ChangeOut(BaseModel):
    path: str
    """Where, e.g. `stages.discovery.exit_criteria.budget_confirmed.label`."""
    before: Any
    after: Any
    """None where the item was added (before) or removed (after)."""


class Diff(BaseModel):
    key: str
    from_version: int
    to_version: int
    changes: list[ChangeOut]


def _context(actor: Actor, request_id: str, key: str | None = None) -> CommandContext:
    return CommandContext(actor, request_id, idempotency_key=key)


def _published(result: service_pipelines.Published, response: Response) -> Published:
    response.headers["ETag"] = f'"{result.pipeline.version}"'
    return Published(changed=result.changed, position=result.position, pipeline=result.pipeline)


@router.get("", summary="Every pipeline: key, label, latest version, stages", dependencies=[READ])
async def list_pipelines(pipelines: Pipelines, service: ServiceDep) -> list[PipelineSummary]:
    found = []
    for key in await service.pipeline_keys():
        latest = (await pipelines.versions(key))[-1]
        found.append(
            PipelineSummary(
                key=key,
                label=latest.label,
                latest_version=latest.version,
                stages=list(latest.stage_keys),
            )
        )
    return found


@router.post("", status_code=201, summary="Create a pipeline: its version 1 (admin)")
async def create_pipeline(
    body: PipelineBody,
    response: Response,
    pipelines: Pipelines,
    actor: Admin,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKeyDep,
) -> Published:
    result = await pipelines.publish(
        body.command(creating=True), _context(actor, request_id, idempotency_key)
    )
    response.headers["Location"] = f"/v1/pipelines/{result.pipeline.key}"
    return _published(result, response)


@router.get(
    "/{key}",
    summary="A pipeline's latest version: stages, criteria, thresholds",
    dependencies=[READ],
)
async def get_pipeline(key: PipelineKey, pipelines: Pipelines, response: Response) -> Pipeline:
    latest = (await pipelines.versions(key))[-1]
    response.headers["ETag"] = f'"{latest.version}"'
    return latest


@router.put(
    "/{key}",
    summary="Publish a new version (admin): new deals open on it; open deals stay on theirs",
)
async def put_pipeline(
    key: PipelineKey,
    body: PipelineBody,
    response: Response,
    pipelines: Pipelines,
    actor: Admin,
    request_id: RequestIdDep,
) -> Published:
    result = await pipelines.publish(
        body.command(creating=False, key=key), _context(actor, request_id)
    )
    return _published(result, response)


@router.get(
    "/{key}/versions/{version}",
    summary="One version of a pipeline, as published",
    dependencies=[READ],
)
async def get_pipeline_version(
    key: PipelineKey, version: Version, pipelines: Pipelines, response: Response
) -> Pipeline:
    found = await pipelines.version(key, version)
    response.headers["ETag"] = f'"{found.version}"'
    return found


@router.get(
    "/{key}/diff",
    summary="What changed between two versions (default: the latest and the one before)",
    dependencies=[READ],
)
async def diff_pipeline(
    key: PipelineKey,
    pipelines: Pipelines,
    from_: Annotated[int | None, Query(alias="from", ge=1, le=2**31 - 1)] = None,
    to: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Diff:
    versions = await pipelines.versions(key)
    to_version = to or len(versions)
    from_version = from_ or max(to_version - 1, 1)
    old = await pipelines.version(key, from_version)
    new = await pipelines.version(key, to_version)
    return Diff(
        key=key,
        from_version=from_version,
        to_version=to_version,
        changes=[ChangeOut(path=c.path, before=c.before, after=c.after) for c in diff(old, new)],
    )


class MigrateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)
    to_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    """The version to move to (default: the latest)."""
    stage_mapping: dict[Key, Key] = Field(default_factory=dict, max_length=50)
    """Stage in the deal's version -> stage in the new one; unmapped stages keep their key."""
    limit: int = Field(default=500, ge=1, le=1000)
    """Deals moved per call at most; `more` says to call again."""


class MovedOut(BaseModel):
    deal_id: UUID
    from_version: int
    from_stage: str
    to_stage: str
    position: int | None


class FailedOut(BaseModel):
    deal_id: UUID
    problem: dict[str, Any]


class MigrationOut(BaseModel):
    to_version: int
    moved: list[MovedOut]
    failed: list[FailedOut]
    more: bool


@router.post(
    "/{key}/migrate",
    summary="Move the pipeline's open deals to a version (admin): one audited event per deal",
    dependencies=[Depends(projected("deals"))],
)
async def migrate_pipeline(
    key: PipelineKey,
    body: MigrateBody,
    connection: ConnectionDep,
    pipelines: Pipelines,
    actor: Admin,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKeyDep,
    min_position: MinPosition = None,
) -> MigrationOut:
    if not body.reason.strip():
        raise InvalidRequest("a migration needs a reason", field="reason")
    command = MigrateDeal(body.reason, body.to_version, dict(body.stage_mapping))
    context = _context(actor, request_id, idempotency_key)
    report = await pipelines.migrate(connection, key, command, context, body.limit)
    return MigrationOut(
        to_version=report.to_version,
        moved=[MovedOut.model_validate(m, from_attributes=True) for m in report.moved],
        failed=[FailedOut(deal_id=d, problem=p) for d, p in report.failed],
        more=report.more,
    )
