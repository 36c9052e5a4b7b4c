"""Request-scoped dependencies: the process's services, a connection, the service, and the
command context (actor, request id, If-Match, Idempotency-Key) as one parameter."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Query, Request
from fastapi.dependencies.models import Dependant

from app.api.auth import allowed, require
from app.api.state import AppState, app_state
from app.db import Connect, driver_connection, spare_connection
from app.domain.errors import BadRequest, InvalidRequest, NotCaughtUp
from app.events.store import EventStore
from app.projections.runner import wait_for_position
from app.service.deals import CommandContext, DealService
from app.telemetry import REQUEST_ID


# Dependencies are `async def` though none awaits: FastAPI runs a plain `def` dependency in
# its thread pool, a thread hop per dependency per request (measured: ~6% of a command).
def _services(request: Request) -> AppState:
    return app_state(request.scope.get("state", {}))


async def get_services(request: Request) -> AppState:
    return _services(request)


ServicesDep = Annotated[AppState, Depends(get_services)]


# The dependencies below read the app state off the request rather than depending on
# `get_services`: FastAPI solves each dependency on every request (~50 us each).
async def get_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for the request's read-model queries, returned after it."""
    async with driver_connection(_services(request).engine) as connection:
        yield connection


async def get_store(request: Request) -> EventStore:
    return _services(request).store


async def get_service(request: Request) -> DealService:
    services = _services(request)
    skew = timedelta(seconds=services.settings.max_clock_skew_seconds)
    return DealService(
        services.store, heads=services.heads, max_clock_skew=skew, pipelines=services.pipelines
    )


async def get_read_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for read-only routes: on the read replica when DATABASE_READ_URL
    is set (the routes' `min_position` waits for the replica's own replay), else the same
    pool as every other route."""
    async with driver_connection(_services(request).reads) as connection:
        yield connection


async def get_read_connect(request: Request) -> Connect:
    """Opens more pooled connections like `get_read_connection`'s, for a route whose
    queries can run side by side."""
    reads = _services(request).reads
    return lambda: spare_connection(reads)


ConnectionDep = Annotated[asyncpg.Connection, Depends(get_connection)]
ReadConnectDep = Annotated[Connect, Depends(get_read_connect)]
ReadConnectionDep = Annotated[asyncpg.Connection, Depends(get_read_connection)]
StoreDep = Annotated[EventStore, Depends(get_store)]


RequestIdHeader = Annotated[
    str | None,
    Header(description="Kept in event metadata; over 200 characters, a new id is used."),
]
IfMatchHeader = Annotated[
    str | None, Header(description='The deal version the client saw, as its ETag: "3"')
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(max_length=255, description="Retry-safe key: a retry returns the first response."),
]


def request_id_of(x_request_id: str | None) -> str:
    # The id the request is served (and logged) under, when the app set one.
    current = REQUEST_ID.get()
    if current is not None:
        return current
    if x_request_id and len(x_request_id) <= 200:
        return x_request_id
    return str(uuid.uuid4())


async def get_request_id(x_request_id: RequestIdHeader = None) -> str:
    return request_id_of(x_request_id)


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


# A route's query parameter names, found once per route (its dependant lives as long as the
# app; kept here beside its names so its id is never reused).
_ALLOWED: dict[int, tuple[Dependant, frozenset[str]]] = {}


def _allowed(dependant: Dependant) -> frozenset[str]:
    found = _ALLOWED.get(id(dependant))
    if found is None or found[0] is not dependant:
        found = _ALLOWED[id(dependant)] = (dependant, frozenset(_query_names(dependant)))
    return found[1]


async def no_unknown_query(request: Request) -> None:
    """A typo in a filter (`?stauts=won`) is a 422 naming it, not a silently unfiltered list;
    so is a value PostgreSQL cannot take as text (NUL), for every route at once."""
    nul = sorted(name for name, value in request.query_params.multi_items() if "\x00" in value)
    if nul:
        raise InvalidRequest(
            f"query parameter(s) {', '.join(nul)}: text must not contain NUL characters"
        )
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = _allowed(dependant)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise InvalidRequest(
            f"unknown query parameter(s): {', '.join(unknown)}; this route takes: {known}"
        )


_ETAG = re.compile(r'^(?:W/)?"(\d{1,10})"$')


def expected_version_of(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match.strip())
    if match is None:
        raise BadRequest('If-Match must be an ETag of this API, e.g. "3"')
    return int(match.group(1))


async def get_idempotency_key(idempotency_key: IdempotencyKeyHeader = None) -> str | None:
    return idempotency_key


ServiceDep = Annotated[DealService, Depends(get_service)]
READ = Depends(require("read"))
RequestIdDep = Annotated[str, Depends(get_request_id)]
IdempotencyKeyDep = Annotated[str | None, Depends(get_idempotency_key)]


# The headers and the role check are in each command's one dependency, not dependencies of
# their own: FastAPI solves every dependency per request (five fewer: ~12% of a command).
async def deal_command(
    request: Request,
    x_request_id: RequestIdHeader = None,
    if_match: IfMatchHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> CommandContext:
    return CommandContext(
        allowed(request, "deal:write"),
        request_id_of(x_request_id),
        expected_version_of(if_match),
        idempotency_key,
    )


async def buyer_command(
    request: Request,
    x_request_id: RequestIdHeader = None,
    if_match: IfMatchHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> CommandContext:
    return CommandContext(
        allowed(request, "buyer:write"),
        request_id_of(x_request_id),
        expected_version_of(if_match),
        idempotency_key,
    )


async def deal_update(
    request: Request, x_request_id: RequestIdHeader = None, if_match: IfMatchHeader = None
) -> CommandContext:
    """PUT and PATCH: idempotent by nature, so no Idempotency-Key."""
    return CommandContext(
        allowed(request, "deal:write"), request_id_of(x_request_id), expected_version_of(if_match)
    )


async def deal_opening(
    request: Request,
    x_request_id: RequestIdHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> CommandContext:
    """A new deal has no version to match."""
    return CommandContext(
        allowed(request, "deal:write"),
        request_id_of(x_request_id),
        idempotency_key=idempotency_key,
    )


async def deal_migration(
    request: Request,
    x_request_id: RequestIdHeader = None,
    if_match: IfMatchHeader = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> CommandContext:
    """Moving a deal to another pipeline version: managers and admins."""
    return CommandContext(
        allowed(request, "deal:migrate"),
        request_id_of(x_request_id),
        expected_version_of(if_match),
        idempotency_key,
    )


# A command's context (actor, request id, If-Match, Idempotency-Key): the one parameter a
# command route takes besides its body.
DealCommand = Annotated[CommandContext, Depends(deal_command)]
BuyerCommand = Annotated[CommandContext, Depends(buyer_command)]
DealUpdate = Annotated[CommandContext, Depends(deal_update)]
DealOpening = Annotated[CommandContext, Depends(deal_opening)]
DealMigration = Annotated[CommandContext, Depends(deal_migration)]


MAX_POSITION = 2**63 - 1  # bigint
MinPosition = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_POSITION,
        description="Wait until projections have applied this log position (from a write).",
    ),
]


def projected(*names: str) -> Callable[..., Awaitable[None]]:
    """A dependency: with `min_position`, wait (bounded) until `names` have applied it."""

    async def wait(services: ServicesDep, min_position: MinPosition = None) -> None:
        if min_position is None:
            return
        deadline = time.monotonic() + services.settings.read_wait_seconds
        while True:
            async with driver_connection(services.reads) as connection:
                left = max(0.0, deadline - time.monotonic())
                ready = await wait_for_position(connection, min_position, names, left)
            if ready is not None or services.read_engine is None:
                break
            # Not on the replica: not replayed there yet, or never written at all?
            async with driver_connection(services.engine) as primary:
                written = await primary.fetchval(
                    "SELECT true FROM events WHERE position = $1", min_position
                )
            if not written:
                break
            if time.monotonic() >= deadline:
                ready = False
                break
            await asyncio.sleep(0.02)
        if ready is None:
            raise InvalidRequest(f"no event at position {min_position}: use a write's position")
        if not ready:
            raise NotCaughtUp(
                f"read models have not reached position {min_position} yet; retry shortly"
            )

    return wait
