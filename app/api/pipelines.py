"""Pipeline configuration, read-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import READ
from app.domain.errors import NotFound
from app.domain.pipeline import PIPELINES, Pipeline

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"], dependencies=[READ])


@router.get("/{key}", summary="A pipeline: stages, probabilities, exit criteria, templates")
async def get_pipeline(
    key: Annotated[str, Path(json_schema_extra={"enum": list(PIPELINES)})],
) -> Pipeline:
    if key not in PIPELINES:
        raise NotFound(f"no pipeline {key!r}; known: {', '.join(PIPELINES)}")
    return PIPELINES[key]
