"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from app import telemetry
from app.api.deps import ServicesDep
from app.api.problems import problem_response
from app.db import driver_connection, head_revision
from app.projections.health import health
from app.projections.registry import FOLLOWERS, PROJECTIONS
from app.projections.webhook_deliveries import delivery_backlog, delivery_counts

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
            state = await health(connection, list(PROJECTIONS)) if current == expected else None
    except Exception as exc:  # any failure to reach or query the database means not ready
        return problem_response(503, "Not ready", f"database unavailable: {exc}")
    if current != expected or state is None:
        return problem_response(
            503, "Not ready", f"database is at migration {current}, expected {expected}"
        )
    # Ready to take writes even when a projection is stopped: say so, loudly, with 200.
    return JSONResponse(
        {
            "status": "degraded" if state.stopped else "ready",
            "migration": current,
            "database_role": role,
            "projections_stopped": [
                {
                    "projection": p.name,
                    "position": p.stopped_at,
                    "error": p.stopped_by,
                    "since": p.stopped_since.isoformat() if p.stopped_since else None,
                }
                for p in state.stopped
            ],
            "projection_lag": {p.name: p.lag for p in state.projections},
            "oldest_transaction_seconds": state.oldest_transaction_seconds,
        }
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics: projection lag and stops, webhook deliveries, latencies",
    response_class=PlainTextResponse,
)
async def metrics(services: ServicesDep) -> PlainTextResponse:
    async with driver_connection(services.engine) as connection:
        state = await health(connection, list(FOLLOWERS))
        by_status = await delivery_counts(connection)
        pending, waited = await delivery_backlog(connection)
    registry = CollectorRegistry()
    lag = Gauge(
        "dealledger_projection_lag_events",
        "Committed events a projection has not applied yet",
        ["projection"],
        registry=registry,
    )
    lag_seconds = Gauge(
        "dealledger_projection_lag_seconds",
        "How long the oldest event a projection has not applied has been in the log",
        ["projection"],
        registry=registry,
    )
    stopped = Gauge(
        "dealledger_projection_stopped",
        "1 while an event the projection cannot apply holds it (see /readyz)",
        ["projection"],
        registry=registry,
    )
    for projection in state.projections:
        lag.labels(projection.name).set(projection.lag)
        lag_seconds.labels(projection.name).set(projection.lag_seconds)
        stopped.labels(projection.name).set(1 if projection.stopped_at is not None else 0)
    oldest = Gauge(
        "dealledger_oldest_transaction_seconds",
        "Age of the oldest open transaction (gap-safe readers wait for it)",
        registry=registry,
    )
    oldest.set(state.oldest_transaction_seconds or 0)
    deliveries = Gauge(
        "dealledger_webhook_deliveries",
        "Webhook deliveries in the outbox by status (all processes)",
        ["status"],
        registry=registry,
    )
    for status in ("pending", "delivered", "failed"):
        deliveries.labels(status).set(by_status.get(status, 0))
    backlog = Gauge(
        "dealledger_webhook_due_seconds",
        "How long the oldest due delivery to an enabled endpoint has waited for a worker",
        registry=registry,
    )
    backlog.set(waited if pending else 0)
    text = generate_latest(registry) + generate_latest(telemetry.REGISTRY)
    return PlainTextResponse(text, media_type=CONTENT_TYPE_LATEST)
