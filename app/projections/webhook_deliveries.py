"""The webhook outbox: the `webhook_deliveries` table, which the log consumer fills and
delivery workers drain, and the SQL on it.

Workers claim due deliveries with FOR UPDATE SKIP LOCKED and a lease, in a short transaction
of their own: no transaction stays open across an HTTP call (it would hold every gap-safe
reader of the log back). A delivery whose worker died comes due again when its lease ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

WAKE_CHANNEL = "webhook_deliveries"


@dataclass(frozen=True)
class NewDelivery:
    endpoint_id: UUID
    message_id: str
    event_type: str
    position: int | None
    deal_id: UUID | None
    payload: str
    event_at: datetime
    delivery_id: UUID = field(default_factory=uuid4)


async def enqueue(connection: asyncpg.Connection, deliveries: Sequence[NewDelivery]) -> int:
    """Add deliveries (in the caller's transaction) and wake the workers when it commits."""
    if not deliveries:
        return 0
    columns: list[list[Any]] = [[] for _ in range(8)]
    for d in deliveries:
        values = (
            d.delivery_id,
            d.endpoint_id,
            d.message_id,
            d.event_type,
            d.position,
            d.deal_id,
            d.payload,
            d.event_at,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    await connection.execute(
        "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, message_id, event_type,"
        " position, deal_id, payload, event_at)"
        " SELECT a, b, c, d, e, f, g, h FROM unnest($1::uuid[], $2::uuid[], $3::text[],"
        " $4::text[], $5::bigint[], $6::uuid[], $7::text[], $8::timestamptz[])"
        " WITH ORDINALITY AS r"
        "(a, b, c, d, e, f, g, h, n) ORDER BY n",
        *columns,
    )
    await connection.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)
    return len(deliveries)


@dataclass(frozen=True)
class Delivery:
    delivery_id: UUID
    seq: int
    endpoint_id: UUID
    message_id: str
    event_type: str
    position: int | None
    deal_id: UUID | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


_DELIVERY_COLUMNS = (
    "delivery_id, seq, endpoint_id, message_id, event_type, position, deal_id, status,"
    " attempts, CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,"
    " last_attempt_at, last_status_code, last_error, created_at, delivered_at"
)


async def get_delivery(connection: asyncpg.Connection, delivery_id: UUID) -> Delivery | None:
    row = await connection.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = $1", delivery_id
    )
    return Delivery(**dict(row)) if row else None


async def list_deliveries(
    connection: asyncpg.Connection,
    endpoint_id: UUID,
    *,
    status: str | None,
    before_seq: int | None,
    limit: int,
) -> list[Delivery]:
    """Newest first."""
    rows = await connection.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1"
        " AND ($2::text IS NULL OR status = $2) AND ($3::bigint IS NULL OR seq < $3)"
        " ORDER BY seq DESC LIMIT $4",
        endpoint_id,
        status,
        before_seq,
        limit,
    )
    return [Delivery(**dict(r)) for r in rows]


class DeliveryInFlight(Exception):
    """A worker is sending this delivery now."""


async def retry_delivery(
    connection: asyncpg.Connection, endpoint_id: UUID, delivery_id: UUID
) -> Delivery | None:
    """Due again now, whatever its status (None: no such delivery of this endpoint); raises
    DeliveryInFlight while a worker holds it."""
    async with connection.transaction():
        row = await connection.fetchrow(
            "SELECT lease_until > now() AS leased FROM webhook_deliveries"
            " WHERE delivery_id = $1 AND endpoint_id = $2 FOR UPDATE",
            delivery_id,
            endpoint_id,
        )
        if row is None:
            return None
        if row["leased"]:
            raise DeliveryInFlight(str(delivery_id))
        updated = await connection.fetchrow(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),"
            " lease_token = NULL, lease_until = NULL"
            f" WHERE delivery_id = $1 RETURNING {_DELIVERY_COLUMNS}",
            delivery_id,
        )
        await connection.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)
    return Delivery(**dict(updated))


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds until `lease_token`'s lease ends."""

    delivery_id: UUID
    lease_token: UUID
    endpoint_id: UUID
    message_id: str
    payload: str
    attempts: int
    """Including the attempt about to be made."""
    event_at: datetime
    url: str
    secrets: tuple[str, ...]
    failing_since: datetime | None


# The oldest pending delivery of a deal to an endpoint goes first: the next one waits for
# it (delivered or given up), so a receiver sees each deal's events in log order.
_CLAIM = """
WITH due AS (
    SELECT d.delivery_id FROM webhook_deliveries d
    JOIN webhook_endpoints e USING (endpoint_id)
    WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.enabled
      AND (d.lease_until IS NULL OR d.lease_until < now())
      AND (d.deal_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM webhook_deliveries earlier
            WHERE earlier.endpoint_id = d.endpoint_id AND earlier.deal_id = d.deal_id
              AND earlier.status = 'pending' AND earlier.seq < d.seq))
    ORDER BY d.next_attempt_at, d.seq
    LIMIT $3
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries w
SET lease_token = $1, lease_until = now() + $2 * interval '1 second',
    attempts = w.attempts + 1, last_attempt_at = now()
FROM due, webhook_endpoints e
WHERE w.delivery_id = due.delivery_id AND e.endpoint_id = w.endpoint_id
RETURNING w.delivery_id, w.endpoint_id, w.message_id, w.payload, w.attempts, w.event_at,
          e.url, e.secret, e.failing_since,
          CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret
"""


async def claim(
    connection: asyncpg.Connection, *, lease_seconds: float, limit: int
) -> list[Claimed]:
    """Lease up to `limit` due deliveries (none another worker holds)."""
    token = uuid4()
    async with connection.transaction():
        # Walk the due index in order and stop at `limit`: on a young table the planner's
        # estimates favour reading every pending row and sorting them (9 ms at 3,000 rows).
        await connection.execute("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off")
        rows = await connection.fetch(_CLAIM, token, lease_seconds, limit)
    return [
        Claimed(
            delivery_id=r["delivery_id"],
            lease_token=token,
            endpoint_id=r["endpoint_id"],
            message_id=r["message_id"],
            payload=r["payload"],
            attempts=r["attempts"],
            event_at=r["event_at"],
            url=r["url"],
            secrets=(r["secret"], *([r["previous_secret"]] if r["previous_secret"] else [])),
            failing_since=r["failing_since"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Attempted:
    """How one attempt on a claimed delivery ended, to be recorded under its lease."""

    claimed: Claimed
    status: str
    status_code: int | None
    error: str | None
    retry_in: float | None
    disable_reason: str | None


async def record_attempts(
    connection: asyncpg.Connection, attempts: Sequence[Attempted]
) -> set[UUID]:
    """Record how attempts ended, in one transaction; returns the deliveries recorded. One
    whose lease had ended and that another worker took meanwhile is not (its result counts)."""
    async with connection.transaction():
        rows = await connection.fetch(
            "UPDATE webhook_deliveries d SET status = r.status, last_status_code = r.code,"
            " last_error = r.error, lease_token = NULL, lease_until = NULL,"
            " next_attempt_at = CASE WHEN r.retry_in IS NULL THEN d.next_attempt_at"
            " ELSE now() + r.retry_in * interval '1 second' END,"
            " delivered_at = CASE WHEN r.status = 'delivered' THEN now() END"
            " FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[],"
            " $6::float8[]) AS r(id, token, status, code, error, retry_in)"
            " WHERE d.delivery_id = r.id AND d.lease_token = r.token RETURNING d.delivery_id",
            [a.claimed.delivery_id for a in attempts],
            [a.claimed.lease_token for a in attempts],
            [a.status for a in attempts],
            [a.status_code for a in attempts],
            [a.error for a in attempts],
            [a.retry_in for a in attempts],
        )
        kept = {r["delivery_id"] for r in rows}
        mine = [a for a in attempts if a.claimed.delivery_id in kept]
        # An endpoint's failure streak ends with any success and starts with a failure.
        succeeded = {a.claimed.endpoint_id for a in mine if a.status == "delivered"}
        failed = {a.claimed.endpoint_id for a in mine if a.status != "delivered"} - succeeded
        if succeeded:
            await connection.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL"
                " WHERE endpoint_id = ANY($1::uuid[]) AND failing_since IS NOT NULL",
                list(succeeded),
            )
        if failed:
            await connection.execute(
                "UPDATE webhook_endpoints SET failing_since = now()"
                " WHERE endpoint_id = ANY($1::uuid[]) AND failing_since IS NULL",
                list(failed),
            )
        for a in mine:
            if a.disable_reason is not None:
                await connection.execute(
                    "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2,"
                    " disabled_at = now() WHERE endpoint_id = $1 AND enabled",
                    a.claimed.endpoint_id,
                    a.disable_reason,
                )
    return kept


async def delivery_backlog(connection: asyncpg.Connection) -> tuple[int, float]:
    """Pending deliveries to enabled endpoints, and how long the oldest due one has waited."""
    row = await connection.fetchrow(
        "SELECT count(*) AS pending,"
        " coalesce(extract(epoch FROM now() - min(d.next_attempt_at)"
        " FILTER (WHERE d.next_attempt_at <= now())), 0) AS waited"
        " FROM webhook_deliveries d JOIN webhook_endpoints e USING (endpoint_id)"
        " WHERE d.status = 'pending' AND e.enabled"
    )
    return int(row["pending"]), float(row["waited"])


async def delivery_counts(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch(
        "SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY status"
    )
    return {r["status"]: int(r["n"]) for r in rows}
