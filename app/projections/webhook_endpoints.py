"""Webhook subscriptions: the `webhook_endpoints` table and the SQL on it (the secret is
kept as is: signing needs it; it leaves the service only in the create and rotate answers)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from app.domain.webhooks import Subscription


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: UUID
    seq: int
    url: str
    description: str
    event_types: tuple[str, ...]
    filters: dict[str, tuple[str, ...]]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None
    failing_since: datetime | None
    created_at: datetime
    created_by: str | None
    updated_at: datetime

    @property
    def subscription(self) -> Subscription:
        return Subscription(self.endpoint_id, self.event_types, self.filters)


_ENDPOINT_COLUMNS = (
    "endpoint_id, seq, url, description, event_types, filters::text AS filters, enabled,"
    " disabled_reason, disabled_at, secret, previous_secret, previous_secret_until,"
    " failing_since, created_at, created_by, updated_at"
)


def _endpoint(row: asyncpg.Record) -> Endpoint:
    values = dict(row)
    values["event_types"] = tuple(values["event_types"])
    values["filters"] = {k: tuple(v) for k, v in json.loads(values["filters"]).items()}
    return Endpoint(**values)


async def create_endpoint(
    connection: asyncpg.Connection,
    *,
    url: str,
    description: str,
    event_types: Sequence[str],
    filters: dict[str, tuple[str, ...]],
    enabled: bool,
    secret: str,
    created_by: str,
) -> Endpoint:
    row = await connection.fetchrow(
        "INSERT INTO webhook_endpoints"
        " (endpoint_id, url, description, event_types, filters, enabled, secret, created_by)"
        f" VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING {_ENDPOINT_COLUMNS}",
        uuid4(),
        url,
        description,
        list(event_types),
        json.dumps(filters),
        enabled,
        secret,
        created_by,
    )
    return _endpoint(row)


async def get_endpoint(connection: asyncpg.Connection, endpoint_id: UUID) -> Endpoint | None:
    row = await connection.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = $1", endpoint_id
    )
    return _endpoint(row) if row else None


async def list_endpoints(
    connection: asyncpg.Connection, *, after_seq: int, limit: int
) -> list[Endpoint]:
    rows = await connection.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE seq > $1 ORDER BY seq LIMIT $2",
        after_seq,
        limit,
    )
    return [_endpoint(r) for r in rows]


async def enabled_endpoints(connection: asyncpg.Connection) -> list[Endpoint]:
    rows = await connection.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE enabled ORDER BY seq"
    )
    return [_endpoint(r) for r in rows]


async def update_endpoint(
    connection: asyncpg.Connection, endpoint_id: UUID, changes: dict[str, Any]
) -> Endpoint | None:
    """Set the given columns (url, description, event_types, filters, enabled); enabling
    again clears why it was disabled and its failure streak."""
    sets, values = ["updated_at = now()"], []
    for column in ("url", "description", "event_types", "filters", "enabled"):
        if column in changes:
            value = changes[column]
            if column == "filters":
                value = json.dumps(value)
            elif column == "event_types":
                value = list(value)
            values.append(value)
            cast = "::jsonb" if column == "filters" else ""
            sets.append(f"{column} = ${len(values) + 1}{cast}")
    if changes.get("enabled") is True:
        sets += ["disabled_reason = NULL", "disabled_at = NULL", "failing_since = NULL"]
    elif changes.get("enabled") is False:
        sets += ["disabled_reason = 'disabled by an admin'", "disabled_at = now()"]
    row = await connection.fetchrow(
        f"UPDATE webhook_endpoints SET {', '.join(sets)} WHERE endpoint_id = $1"
        f" RETURNING {_ENDPOINT_COLUMNS}",
        endpoint_id,
        *values,
    )
    return _endpoint(row) if row else None


async def rotate_secret(
    connection: asyncpg.Connection, endpoint_id: UUID, secret: str, overlap_seconds: float
) -> Endpoint | None:
    """A new secret; the old one keeps signing alongside it for `overlap_seconds`."""
    row = await connection.fetchrow(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2,"
        " previous_secret_until = now() + $3 * interval '1 second', updated_at = now()"
        f" WHERE endpoint_id = $1 RETURNING {_ENDPOINT_COLUMNS}",
        endpoint_id,
        secret,
        overlap_seconds,
    )
    return _endpoint(row) if row else None


async def delete_endpoint(connection: asyncpg.Connection, endpoint_id: UUID) -> bool:
    status: str = await connection.execute(
        "DELETE FROM webhook_endpoints WHERE endpoint_id = $1", endpoint_id
    )
    return status.endswith(" 1")
