"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServicesDep
from app.api.problems import problem_response
from app.db import driver_connection, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database is reachable and migrated",
    responses={503: {"description": "Not ready", "content": {"application/problem+json": {}}}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    expected = head_revision()
    try:
        async with driver_connection(services.engine) as connection:
            current = await connection.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
            role = await connection.fetchval("SELECT current_user")
    except Exception as exc:  # any failure to reach or query the database means not ready
        return problem_response(503, "Not ready", f"database unavailable: {exc}")
    if current != expected:
        return problem_response(
            503, "Not ready", f"database is at migration {current}, expected {expected}"
        )
    return JSONResponse({"status": "ready", "migration": current, "database_role": role})
