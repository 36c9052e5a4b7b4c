"""The peer a Python user would otherwise pick: the `eventsourcing` library on its PostgreSQL
recorder (psycopg 3), with the same workload: load a deal, record a buyer activity, save;
then read the whole log back and fold it (its "rebuild")."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.common import Latencies, Row


def _env(url: str, pool: int) -> dict[str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",
        "POSTGRES_POOL_SIZE": str(pool),
        "POSTGRES_MAX_OVERFLOW": "0",
        "CREATE_TABLE": "y",
    }


class Deal(Aggregate):
    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name = name
        self.activities: list[str] = []

    @event("BuyerActivityRecorded")
    def record_activity(self, activity_type: str, occurred_at: str) -> None:
        self.activities.append(activity_type)


class Deals(Application[UUID]):
    pass


def _appends(url: str, writers: int, commands: int) -> Latencies:
    app = Deals(env=_env(url, writers))
    per_writer = max(1, commands // writers // 20)
    ids: list[UUID] = []
    for _ in range(writers * per_writer):
        deal = Deal(name="Bench")
        app.save(deal)
        ids.append(deal.id)
    result = Latencies()
    lock = threading.Lock()

    def writer(w: int) -> None:
        samples = []
        for i in range(commands // writers):
            started = time.perf_counter()
            deal: Deal = app.repository.get(ids[w * per_writer + i % per_writer])
            deal.record_activity("email_replied", datetime.now(UTC).isoformat())
            app.save(deal)
            samples.append(time.perf_counter() - started)
        with lock:
            result.samples.extend(samples)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall = time.perf_counter() - started
    app.close()
    return result


def _read_back(url: str) -> tuple[int, float]:
    app = Deals(env={**_env(url, 2), "CREATE_TABLE": "n"})
    counts: dict[Any, int] = {}
    started = time.perf_counter()
    position, total = 0, 0
    while notes := app.recorder.select_notifications(start=position + 1, limit=5000):
        for note in notes:
            domain_event = app.mapper.to_domain_event(note)
            counts[domain_event.originator_id] = counts.get(domain_event.originator_id, 0) + 1
        position = notes[-1].id
        total += len(notes)
    seconds = time.perf_counter() - started
    app.close()
    return total, seconds


async def run(url: str, commands: int, ours: list[Row]) -> list[Row]:
    """Peer rows, each compared with our figure for the same workload (ours / peer)."""
    rows = []
    for writers, count in ((1, commands), (16, commands * 4)):
        peer = await asyncio.to_thread(_appends, url, writers, count)
        mine = next(
            (r for r in ours if r.scenario.startswith(f"append, single command, {writers} ")), None
        )
        rows.append(
            Row(
                f"peer: eventsourcing append, {writers} writer{'s' if writers > 1 else ''}",
                mine.ours if mine else float("nan"),
                peer.rate,
                "events/s",
                mine.p50_ms if mine else None,
                mine.p99_ms if mine else None,
                peer.percentile(0.99),
                target="≥ 3x the peer (ours / peer)",
                note="floor column = the peer's events/s; floor p99 = the peer's p99",
            )
        )
    events, seconds = await asyncio.to_thread(_read_back, url)
    rows.append(
        Row(
            f"peer: eventsourcing read-and-fold, {events:,} events",
            float("nan"),
            events / seconds,
            "events/s",
            note="the peer only decodes and counts; compare with our rebuild rows",
        )
    )
    return rows
