"""Webhook lag: from a command's commit to its webhook reaching a receiver, under the
16-writer append load, with `dealledger serve` (projector, outbox, delivery worker) in its
own process, as deployed by default."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg

from app.db import asyncpg_dsn, create_engine
from app.domain import commands as c
from app.events.store import EventStore
from app.projections.webhook_endpoints import create_endpoint
from app.service.deals import DealService
from app.service.heads import HeadCache
from app.service.webhooks import new_secret
from bench.common import Latencies, Row
from bench.scenarios import AS_REP, Server, activity, open_deals


class Arrivals:
    """A loopback receiver noting when each deal's webhook arrived (answers 204)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: the sender reuses its connections
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = json.loads(await reader.readexactly(length))
                self.at.setdefault(body["data"]["deal"]["id"], time.perf_counter())
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[Arrivals, str]]:
    arrivals = Arrivals()
    server = await asyncio.start_server(arrivals.handle, "127.0.0.1", 0)
    try:
        yield arrivals, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()


async def webhook_lag(url: str, seconds: float, writers: int = 16, per_second: int = 50) -> Row:
    """`writers` tasks append buyer activity for `seconds` (the append load) while deals are
    opened `per_second` (each a `deal.stage_entered` webhook): the lag is from an opening's
    commit to the receiver having its request."""
    engine = create_engine(url, pool_size=writers + 1)
    service = DealService(EventStore(engine), heads=HeadCache())
    deals = await open_deals(service, writers)  # before subscribing: they send nothing
    async with receiver() as (arrivals, hook_url):
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await create_endpoint(
                connection,
                url=hook_url,
                description="bench",
                event_types=["deal.stage_entered"],
                filters={},
                enabled=True,
                secret=new_secret(),
                created_by="bench",
            )
        finally:
            await connection.close()
        service_process = Server(
            ["-m", "app", "serve", "--port", "{port}"],
            {
                "DATABASE_URL": url,
                "DEALLEDGER_WEBHOOKS_ALLOW_HTTP": "1",
                "DEALLEDGER_WEBHOOKS_ALLOWED_HOSTS": "127.0.0.1",
            },
        )
        committed: dict[str, float] = {}
        appended = 0
        try:
            await service_process.ready("/readyz")
            stop = time.perf_counter() + seconds

            async def writer(w: int) -> None:
                nonlocal appended
                while time.perf_counter() < stop:
                    await service.execute(deals[w], activity(), AS_REP)
                    appended += 1
                    await asyncio.sleep(0.005)  # sustained, as in the projection lag row

            async def opener() -> None:
                while time.perf_counter() < stop:
                    deal_id = uuid.uuid4()
                    await service.execute(deal_id, c.OpenDeal(name="Bench", owner="b"), AS_REP)
                    committed[str(deal_id)] = time.perf_counter()
                    await asyncio.sleep(1 / per_second)

            await asyncio.gather(opener(), *(writer(w) for w in range(writers)))
            deadline = time.perf_counter() + 10
            waiting = len(arrivals.at) < len(committed)
            while waiting and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
                waiting = len(arrivals.at) < len(committed)
        finally:
            service_process.stop()
            await engine.dispose()
    lags = [arrivals.at[d] - at for d, at in committed.items() if d in arrivals.at]
    measured = Latencies(lags, seconds)
    missing = len(committed) - len(lags)
    load = f"under {appended / seconds:,.0f} appends/s"
    return Row(
        f"webhook lag, append → receiver, {writers} writers",
        len(lags) / seconds,
        None,
        "webhooks/s",
        measured.percentile(0.5),
        measured.percentile(0.99),
        target="p99 ≤ 1,000 ms",
        note=f"{load}; {missing} not received within 10 s" if missing else load,
    )
