"""The webhook outbox: a gap-safe consumer of the log that turns matching events into
delivery rows in the same transaction as its checkpoint (so none is skipped or doubled).

flag.raised comes from the flags read model, not the log: the flags projection records each
flag it raises in `flag_raisings` inside its own transaction, and this consumer reads that
table gap-safely too, (transaction id, seq) like the log, with its own checkpoint. The flags
projection stays ignorant of subscriptions, and a flags rebuild re-announces nothing.

An endpoint hears about what was recorded (or judged, for flags) after it was created;
earlier events are for replay. It is not rebuildable like a read model: a rebuild would
send everything again; `replay` does that on purpose, for one endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from app.domain.pipeline_versions import PIPELINE_EVENT_TYPES
from app.domain.state import DealState, evolve, pipelines_named
from app.domain.webhooks import (
    Notification,
    deal_summary,
    envelope,
    flag_notification,
    matches,
    message_id,
    notifications_of,
    wants_type,
)
from app.events.log import Checkpoint
from app.events.pipelines import PipelineVersions, reader_on
from app.events.recorded import to_recorded
from app.events.store import READ_THROUGH_SQL, read_streams_through
from app.projections.runner import Envelope, load_checkpoint
from app.projections.webhook_deliveries import NewDelivery, enqueue
from app.projections.webhook_endpoints import Endpoint, enabled_endpoints

NAME = "webhooks"
FLAGS_CHECKPOINT = "webhooks:flags"


@dataclass(frozen=True)
class _Pending:
    notification: Notification
    endpoints: list[Endpoint]
    version: int


async def _states_at(
    connection: asyncpg.Connection, wanted: dict[UUID, set[int]]
) -> dict[tuple[UUID, int], DealState]:
    """Each deal as it stood at each wanted version (folded from its stream)."""
    through = {deal_id: max(versions) for deal_id, versions in wanted.items()}
    states: dict[tuple[UUID, int], DealState] = {}
    current: dict[UUID, DealState] = {}
    events = [
        (stored, to_recorded(stored)) for stored in await read_streams_through(connection, through)
    ]
    # Deals on an admin's own pipeline fold by its versions (a regression reopens by them).
    catalog = await PipelineVersions().ensure(
        pipelines_named(recorded for _, recorded in events), reader_on(connection)
    )
    for stored, recorded in events:
        state = current.get(stored.stream_id) or DealState(deal_id=stored.stream_id)
        state = evolve(state, recorded, catalog)
        current[stored.stream_id] = state
        if stored.version in wanted[stored.stream_id]:
            states[(stored.stream_id, stored.version)] = state
    return states


def deliveries_for(
    pending: Sequence[_Pending], states: dict[tuple[UUID, int], DealState], link_base: str
) -> list[NewDelivery]:
    found = []
    for item in pending:
        n = item.notification
        state = states.get((n.deal_id, item.version))
        if state is None:
            continue
        body = json.dumps(envelope(n, deal_summary(state), link_base), separators=(",", ":"))
        for endpoint in item.endpoints:
            if matches(endpoint.subscription, n, state.owner):
                found.append(
                    NewDelivery(
                        endpoint.endpoint_id,
                        message_id(endpoint.endpoint_id, n.key),
                        n.type,
                        n.position,
                        n.deal_id,
                        body,
                        n.at,
                    )
                )
    return found


async def deliveries_of_events(
    connection: asyncpg.Connection,
    endpoints: Sequence[Endpoint],
    batch: Sequence[Envelope],
    link_base: str,
    *,
    since_created: bool = True,
) -> list[NewDelivery]:
    """The deliveries a batch of log events makes for these endpoints, in log order."""
    pending: list[_Pending] = []
    for item in batch:
        recorded_at = item.recorded.recorded_at
        for n in notifications_of(
            item.recorded.event,
            deal_id=item.stream_id,
            position=item.position,
            recorded_at=recorded_at,
        ):
            wanting = [
                e
                for e in endpoints
                if wants_type(e.subscription, n.type)
                and (not since_created or recorded_at >= e.created_at)
            ]
            if wanting:
                pending.append(_Pending(n, wanting, item.stored.version))
    if not pending:
        return []
    wanted: dict[UUID, set[int]] = {}
    for waiting in pending:
        wanted.setdefault(waiting.notification.deal_id, set()).add(waiting.version)
    return deliveries_for(pending, await _states_at(connection, wanted), link_base)


async def _save(connection: asyncpg.Connection, name: str, at: Checkpoint) -> None:
    await connection.execute(
        "INSERT INTO projection_checkpoints (name, transaction_id, position)"
        " VALUES ($1, $2::text::xid8, $3) ON CONFLICT (name) DO UPDATE"
        " SET transaction_id = excluded.transaction_id, position = excluded.position",
        name,
        str(at.transaction_id),
        at.position,
    )


async def drain_flag_raisings(
    connection: asyncpg.Connection,
    endpoints: Sequence[Endpoint],
    link_base: str,
    limit: int = 1000,
) -> int:
    """Turn flags raised since the last call into deliveries (in the caller's transaction,
    which holds the consumer's checkpoint); returns how many raisings were read."""
    at = await load_checkpoint(connection, FLAGS_CHECKPOINT, for_update=True)
    rows = await connection.fetch(
        "SELECT deal_id, kind, raised_at, severity, numbers::text AS numbers,"
        " deal::text AS deal, evaluated_at, seq, transaction_id::text::bigint AS xid"
        " FROM flag_raisings WHERE (transaction_id, seq) > ($1::text::xid8, $2)"
        " AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
        " ORDER BY transaction_id, seq LIMIT $3",
        str(at.transaction_id),
        at.position,
        limit,
    )
    if not rows:
        return 0
    found = []
    for r in rows:
        n = flag_notification(
            deal_id=r["deal_id"],
            kind=r["kind"],
            severity=r["severity"],
            raised_at=r["raised_at"],
            numbers=json.loads(r["numbers"]),
        )
        deal = json.loads(r["deal"])
        body: str | None = None
        for endpoint in endpoints:
            if r["evaluated_at"] < endpoint.created_at:
                continue
            if matches(endpoint.subscription, n, deal.get("owner")):
                body = body or json.dumps(envelope(n, deal, link_base), separators=(",", ":"))
                found.append(
                    NewDelivery(
                        endpoint.endpoint_id,
                        message_id(endpoint.endpoint_id, n.key),
                        n.type,
                        None,
                        n.deal_id,
                        body,
                        r["evaluated_at"],
                    )
                )
    await enqueue(connection, found)
    last = rows[-1]
    await _save(connection, FLAGS_CHECKPOINT, Checkpoint(last["xid"], last["seq"]))
    return len(rows)


# A page of the log's keys past a checkpoint, gap-safe as the runner reads, when no endpoint
# is enabled (checked in the same snapshot, so no endpoint enabled before these events
# committed is passed over): its last key and how many events it holds. No row: read on.
_UNHEARD_SQL = """
WITH page AS (
    SELECT transaction_id, position FROM events
    WHERE (transaction_id, position) > ($1::text::xid8, $2)
      AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
      AND NOT EXISTS (SELECT FROM webhook_endpoints WHERE enabled)
    ORDER BY transaction_id, position LIMIT $3
)
SELECT transaction_id::text::bigint AS xid, position, (SELECT count(*) FROM page) AS events
FROM page ORDER BY transaction_id DESC, position DESC LIMIT 1
"""
SKIP_PAGE = 100_000


class WebhookOutbox:
    """Run by the projection runner like a projection (one active, checkpointed batches),
    but never rebuilt: it has no read model, only the deliveries it hands to workers."""

    name = NAME
    tables: tuple[str, ...] = ()

    def __init__(self, link_base: str = "http://127.0.0.1:8000", poll_seconds: float = 0.5):
        self.link_base = link_base
        self.tick_seconds = poll_seconds

    async def unheard(
        self, connection: asyncpg.Connection, after: Checkpoint
    ) -> tuple[Checkpoint, int] | None:
        """With no endpoint enabled, the events after `after` are for nobody (an endpoint
        hears what was recorded after it was created): the key to move to without reading
        them, and how many that passes (a page of keys, not of rows). None: read them.
        After a bulk load or restore this outbox read the whole log for nothing, minutes of
        a projector's time at ten million events."""
        row = await connection.fetchrow(
            _UNHEARD_SQL, str(after.transaction_id), after.position, SKIP_PAGE
        )
        if row is None:
            return None
        return Checkpoint(row["xid"], row["position"]), int(row["events"])

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        endpoints = await enabled_endpoints(connection)
        if endpoints:
            found = await deliveries_of_events(connection, endpoints, batch, self.link_base)
            await enqueue(connection, found)
        await drain_flag_raisings(connection, endpoints, self.link_base)

    async def tick(self, connection: asyncpg.Connection, now: datetime) -> None:
        """Between log events: flags that time alone raised (the flags projection's sweep)."""
        endpoints = await enabled_endpoints(connection)
        await drain_flag_raisings(connection, endpoints, self.link_base)


async def replay(
    connection: asyncpg.Connection,
    endpoint: Endpoint,
    from_position: int,
    link_base: str,
    page: int = 1000,
) -> tuple[int, int]:
    """Deliver again to one endpoint every matching event from `from_position` up to where
    the outbox stands (later events reach it the usual way); one short transaction per page.
    Returns (deliveries enqueued, the outbox's position)."""
    head = await load_checkpoint(connection, NAME)
    after = Checkpoint()
    enqueued = 0
    while True:
        rows = await connection.fetch(
            READ_THROUGH_SQL,
            str(after.transaction_id),
            after.position,
            str(head.transaction_id),
            head.position,
            from_position,
            page,
        )
        if not rows:
            return enqueued, head.position
        batch = [Envelope(row) for row in rows]
        last = batch[-1].checkpoint
        # Pipeline versions are not deal events: nothing a subscriber asks for.
        batch = [e for e in batch if e.type not in PIPELINE_EVENT_TYPES]
        async with connection.transaction():
            found = await deliveries_of_events(
                connection, [endpoint], batch, link_base, since_created=False
            )
            enqueued += await enqueue(connection, found)
        after = last
