"""The FastAPI application and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from app.api import (
    analytics,
    audit,
    deals,
    events,
    flags,
    health,
    inspections,
    keys,
    log,
    pipeline_health,
    pipelines,
    webhooks,
)
from app.api.auth import AuthMiddleware, document_security
from app.api.deps import no_unknown_query
from app.api.idempotency import IdempotencyMiddleware
from app.api.limits import BodyLimitMiddleware
from app.api.observability import Observed
from app.api.problems import UnavailableGuard, document_problems, install_problem_handlers
from app.api.state import STATE_KEY, AppState
from app.api.ui import routes as ui_routes
from app.db import asyncpg_dsn, create_engine, resolve_database_url, supervise_embedded
from app.events.pipelines import PipelineVersions
from app.events.store import EventStore, listen_for_heads
from app.keys import KeyCache
from app.projections.log_tree import load_signer
from app.projections.registry import followers_for, rules_of
from app.projections.runner import ProjectionRunner
from app.service.heads import HeadCache
from app.service.webhooks import delivering
from app.settings import Settings, load_settings

UI_STATIC = Path(ui_routes.__file__).parent / "static"


def create_app(
    settings: Settings | None = None,
    database_url: str | None = None,
    *,
    supervise: Path | None = None,
) -> FastAPI:
    """The app; `database_url` overrides settings (else DATABASE_URL or the embedded server).
    `supervise`: the data dir of an embedded PostgreSQL to keep running (started again when
    it dies)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        url = database_url or resolve_database_url(settings)
        engine = create_engine(url, settings.pool_size)
        read_engine = (
            create_engine(settings.database_read_url, settings.pool_size)
            if settings.database_read_url
            else None
        )
        services = AppState(
            settings=settings,
            engine=engine,
            store=EventStore(engine),
            heads=HeadCache(settings.head_cache_size),
            flag_rules=rules_of(settings),
            verifier=load_signer(settings).verifier,
            pipelines=PipelineVersions(),
            read_engine=read_engine,
            key_cache=KeyCache(settings.key_cache_seconds),
        )
        projector = None
        supervisor = (
            asyncio.create_task(supervise_embedded(supervise), name="embedded-postgres")
            if supervise is not None
            else None
        )
        # Other processes' appends, heard as they commit: folded onto this process's cached
        # heads of those deals (or, if not announced in full, read on from before a command).
        listener = asyncio.create_task(
            listen_for_heads(
                asyncpg_dsn(url),
                lambda heard: services.heads.heard(heard, services.pipelines.catalog),
            ),
            name="heads",
        )
        workers = contextlib.AsyncExitStack()
        if settings.webhooks_deliver:
            await workers.enter_async_context(delivering(asyncpg_dsn(url), settings))
        if settings.run_projector:
            runner = ProjectionRunner(
                asyncpg_dsn(url),
                followers_for(settings),
                batch_size=settings.projection_batch_size,
                tick_interval=settings.flag_sweep_seconds,
            )
            projector = asyncio.create_task(runner.run(), name="projector")
        try:
            yield {STATE_KEY: services}  # the server hands it to every request's scope
        finally:
            await workers.aclose()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            if projector is not None:
                projector.cancel()
                # Bounded: a shutdown never hangs on a projector stuck in a database call.
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(projector, timeout=10)
            if supervisor is not None:
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
            with contextlib.suppress(TimeoutError):  # the projectors' last wake, if on its way
                await asyncio.wait_for(services.store.followers.settled(), timeout=5)
            with contextlib.suppress(TimeoutError):  # bounded too: never hang a shutdown
                await asyncio.wait_for(engine.dispose(), timeout=10)
                if read_engine is not None:
                    await asyncio.wait_for(read_engine.dispose(), timeout=10)

    app = FastAPI(
        title="dealledger",
        version="0.1.0",
        summary="Event-sourced deal progression: no evidence, no progress.",
        lifespan=lifespan,
        dependencies=[Depends(no_unknown_query)],
        # Operation ids are the route functions' names (`create_deal`, `advance`), so a
        # generated client reads well; names are unique across routers (a test checks).
        generate_unique_id_function=lambda route: route.name,
    )
    install_problem_handlers(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_security(document_problems(get_openapi_schema()))
        return app.openapi_schema

    get_openapi_schema = app.openapi
    app.openapi = openapi  # type: ignore[method-assign]
    # Outermost last: authenticate (reads no body), cap the body, then replay idempotent
    # retries per caller.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        per_path={"/v1/events": settings.max_batch_body_bytes},
    )
    app.add_middleware(AuthMiddleware, dev_mode=settings.dev_mode)
    app.add_middleware(UnavailableGuard)
    app.add_middleware(Observed)
    app.include_router(health.router)
    app.include_router(deals.router)
    app.include_router(events.router)
    app.include_router(pipelines.router)
    app.include_router(audit.router)
    app.include_router(log.router)
    app.include_router(ui_routes.router)
    app.mount("/ui/static", StaticFiles(directory=UI_STATIC), name="ui-static")
    app.include_router(keys.router)
    app.include_router(flags.router)
    app.include_router(analytics.router)
    app.include_router(pipeline_health.router)
    app.include_router(inspections.router)
    app.include_router(webhooks.router)
    return app


def app_from_environment() -> FastAPI:
    """The app as a worker of `serve --workers N` builds it: everything from the environment
    the parent set (DATABASE_URL, DEALLEDGER_*), logging as the parent configured it."""
    from app.runtime import settle_heap
    from app.telemetry import configure_logging

    settings = load_settings()
    configure_logging(settings.log_format)
    app = create_app(settings)
    settle_heap()
    return app
