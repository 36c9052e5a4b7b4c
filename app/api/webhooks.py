"""Webhook subscriptions over HTTP, for admins: create (the secret is shown once), list,
read, change, delete, rotate the secret, send a test, see deliveries, retry, replay."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AnyUrl, BaseModel, ConfigDict, Field

from app.api.auth import require
from app.api.deps import MAX_POSITION, ConnectionDep, ServicesDep
from app.api.json_bodies import ExactJsonRoute
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.domain.decide import Actor
from app.domain.errors import ConcurrentModification, InvalidRequest, NotFound
from app.domain.webhooks import (
    EventType,
    check_event_types,
    check_filters,
    message_id,
    ping_envelope,
    preset,
)
from app.projections import webhook_deliveries as outbox
from app.projections import webhook_endpoints as endpoints
from app.projections.webhook_outbox import replay as replay_events
from app.service.webhooks import DeliveryPolicy, check_destination, new_secret

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=ExactJsonRoute)
Admin = Annotated[Actor, Depends(require("webhooks"))]
Url = Annotated[AnyUrl, Field(max_length=2000, description="https (http only if allowed)")]
EventTypeOrAny = Annotated[EventType | Literal["*"], Field()]
Filters = Annotated[
    dict[str, list[Annotated[str, Field(min_length=1, max_length=200)]]],
    Field(
        description="Narrow what is sent: `stage` (deal.stage_entered: the stage entered),"
        " `severity` and `kind` (flag.raised), `owner` (every type: the deal's owner)",
        examples=[{"stage": ["negotiation", "closing"], "severity": ["critical"]}],
    ),
]


class CreateWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url
    description: str = Field(default="", max_length=1000)
    event_types: list[EventTypeOrAny] | None = Field(default=None, max_length=20)
    filters: Filters | None = None
    preset: Literal["manager"] | None = Field(
        default=None,
        description="`manager`: deal.stage_entered for the late stages (negotiation, closing)"
        " and flag.raised with severity critical; give no event_types or filters with it",
    )
    enabled: bool = True


class UpdateWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Url | None = None
    description: str | None = Field(default=None, max_length=1000)
    event_types: list[EventTypeOrAny] | None = Field(default=None, min_length=1, max_length=20)
    filters: Filters | None = None
    enabled: bool | None = Field(default=None, description="true enables a disabled endpoint")


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_seconds: float = Field(
        default=86400,
        ge=0,
        le=7 * 86400,
        description="How long the old secret keeps signing alongside the new one",
    )


class WebhookOut(BaseModel):
    id: UUID
    url: str
    description: str
    event_types: list[str]
    filters: dict[str, list[str]]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    previous_secret_until: datetime | None = Field(
        description="While in the future, deliveries carry a signature with the old secret too"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: endpoints.Endpoint) -> WebhookOut:
        return cls(
            id=endpoint.endpoint_id,
            url=endpoint.url,
            description=endpoint.description,
            event_types=list(endpoint.event_types),
            filters={k: list(v) for k, v in endpoint.filters.items()},
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            disabled_at=endpoint.disabled_at,
            failing_since=endpoint.failing_since,
            previous_secret_until=endpoint.previous_secret_until,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="whsec_…: shown in this response only; verify with it")


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class DeliveryOut(BaseModel):
    id: UUID
    message_id: str = Field(description="The webhook-id header: the same on every attempt")
    event_type: str
    position: int | None
    deal_id: UUID | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, d: outbox.Delivery) -> DeliveryOut:
        return cls(
            id=d.delivery_id,
            message_id=d.message_id,
            event_type=d.event_type,
            position=d.position,
            deal_id=d.deal_id,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_attempt_at=d.last_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class Replayed(BaseModel):
    from_position: int
    through_position: int = Field(description="The last log position the outbox had passed")
    enqueued: int


async def _endpoint(connection: ConnectionDep, webhook_id: UUID) -> endpoints.Endpoint:
    endpoint = await endpoints.get_endpoint(connection, webhook_id)
    if endpoint is None:
        raise NotFound(f"no webhook {webhook_id}")
    return endpoint


@router.post("", status_code=201, summary="Subscribe a URL; the signing secret is shown once")
async def create_webhook(
    body: CreateWebhook,
    response: Response,
    connection: ConnectionDep,
    services: ServicesDep,
    admin: Admin,
) -> WebhookWithSecret:
    if body.preset is not None:
        if body.event_types is not None or body.filters is not None:
            raise InvalidRequest("give either a preset or event_types and filters, not both")
        event_types, filters = preset(body.preset)
    else:
        if body.event_types is None:
            raise InvalidRequest("event_types is required (or a preset)")
        event_types = check_event_types(body.event_types)
        filters = check_filters(body.filters or {})
    url = str(body.url)
    await check_destination(url, DeliveryPolicy.of(services.settings))
    secret = new_secret()
    endpoint = await endpoints.create_endpoint(
        connection,
        url=url,
        description=body.description,
        event_types=event_types,
        filters=filters,
        enabled=body.enabled,
        secret=secret,
        created_by=admin.id,
    )
    response.headers["Cache-Control"] = "no-store"  # the body holds the secret
    return WebhookWithSecret(**WebhookOut.of(endpoint).model_dump(), secret=secret)


@router.get("", summary="List webhook subscriptions (never their secrets)")
async def list_webhooks(
    connection: ConnectionDep,
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> WebhookPage:
    after = decode_cursor(cursor, "s")
    found = await endpoints.list_endpoints(
        connection, after_seq=after["s"] if after else 0, limit=limit + 1
    )
    page = found[:limit]
    more = len(found) > limit
    return WebhookPage(
        items=[WebhookOut.of(e) for e in page],
        next_cursor=encode_cursor({"s": page[-1].seq}) if more else None,
    )


@router.get("/{webhook_id}", summary="One webhook subscription")
async def get_webhook(webhook_id: UUID, connection: ConnectionDep, admin: Admin) -> WebhookOut:
    return WebhookOut.of(await _endpoint(connection, webhook_id))


@router.patch("/{webhook_id}", summary="Change a subscription, or enable it again")
async def update_webhook(
    webhook_id: UUID,
    body: UpdateWebhook,
    connection: ConnectionDep,
    services: ServicesDep,
    admin: Admin,
) -> WebhookOut:
    changes: dict[str, object] = {}
    sent = body.model_fields_set
    for field in ("description", "enabled"):
        value = getattr(body, field)
        if field in sent and value is None:
            raise InvalidRequest(f"{field} may not be null")
        if value is not None:
            changes[field] = value
    if body.url is not None:
        changes["url"] = str(body.url)
        await check_destination(str(body.url), DeliveryPolicy.of(services.settings))
    if body.event_types is not None:
        changes["event_types"] = check_event_types(body.event_types)
    if body.filters is not None:
        changes["filters"] = check_filters(body.filters)
    endpoint = await endpoints.update_endpoint(connection, webhook_id, changes)
    if endpoint is None:
        raise NotFound(f"no webhook {webhook_id}")
    return WebhookOut.of(endpoint)


@router.delete("/{webhook_id}", status_code=204, summary="Unsubscribe (its deliveries go too)")
async def delete_webhook(webhook_id: UUID, connection: ConnectionDep, admin: Admin) -> Response:
    if not await endpoints.delete_endpoint(connection, webhook_id):
        raise NotFound(f"no webhook {webhook_id}")
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    summary="A new secret, shown once; the old one keeps signing alongside it for a while",
)
async def rotate_webhook_secret(
    webhook_id: UUID,
    response: Response,
    connection: ConnectionDep,
    admin: Admin,
    body: RotateSecret | None = None,
) -> WebhookWithSecret:
    secret = new_secret()
    overlap = (body or RotateSecret()).overlap_seconds
    endpoint = await endpoints.rotate_secret(connection, webhook_id, secret, overlap)
    if endpoint is None:
        raise NotFound(f"no webhook {webhook_id}")
    response.headers["Cache-Control"] = "no-store"
    return WebhookWithSecret(**WebhookOut.of(endpoint).model_dump(), secret=secret)


@router.post("/{webhook_id}/test", status_code=202, summary="Send a signed test message")
async def test_webhook(webhook_id: UUID, connection: ConnectionDep, admin: Admin) -> DeliveryOut:
    endpoint = await _endpoint(connection, webhook_id)
    now = datetime.now(UTC)
    ping = outbox.NewDelivery(
        endpoint.endpoint_id,
        message_id(endpoint.endpoint_id, f"ping:{uuid.uuid4()}"),
        "webhook.test",
        None,
        None,
        json.dumps(ping_envelope(endpoint.endpoint_id, now), separators=(",", ":")),
        now,
    )
    async with connection.transaction():
        await outbox.enqueue(connection, [ping])
    delivery = await outbox.get_delivery(connection, ping.delivery_id)
    if delivery is None:  # the endpoint was deleted meanwhile
        raise NotFound(f"no webhook {webhook_id}")
    return DeliveryOut.of(delivery)


@router.get("/{webhook_id}/deliveries", summary="Deliveries to this endpoint, newest first")
async def list_webhook_deliveries(
    webhook_id: UUID,
    connection: ConnectionDep,
    admin: Admin,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> DeliveryPage:
    await _endpoint(connection, webhook_id)
    before = decode_cursor(cursor, "s")
    found = await outbox.list_deliveries(
        connection,
        webhook_id,
        status=status,
        before_seq=before["s"] if before else None,
        limit=limit + 1,
    )
    page = found[:limit]
    more = len(found) > limit
    return DeliveryPage(
        items=[DeliveryOut.of(d) for d in page],
        next_cursor=encode_cursor({"s": page[-1].seq}) if more else None,
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    summary="Send a delivery again now (same webhook-id)",
)
async def retry_webhook_delivery(
    webhook_id: UUID, delivery_id: UUID, connection: ConnectionDep, admin: Admin
) -> DeliveryOut:
    try:
        found = await outbox.retry_delivery(connection, webhook_id, delivery_id)
    except outbox.DeliveryInFlight as busy:
        raise ConcurrentModification(
            "a worker is sending this delivery now; retry shortly"
        ) from busy
    if found is None:
        raise NotFound(f"no delivery {delivery_id} for webhook {webhook_id}")
    return DeliveryOut.of(found)


@router.post(
    "/{webhook_id}/replay",
    status_code=202,
    summary="Send again every matching event from a log position on (same webhook-ids)",
)
async def replay_webhook(
    webhook_id: UUID,
    connection: ConnectionDep,
    services: ServicesDep,
    admin: Admin,
    from_position: Annotated[int, Query(ge=1, le=MAX_POSITION)],
) -> Replayed:
    endpoint = await _endpoint(connection, webhook_id)
    enqueued, through = await replay_events(
        connection, endpoint, from_position, services.settings.public_url
    )
    return Replayed(from_position=from_position, through_position=through, enqueued=enqueued)
