"""Each scenario measures one of our paths and its floor on the same server, in the same run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.db import asyncpg_dsn, create_engine
from app.domain import commands as c
from app.domain.decide import Actor
from app.events.store import EventStore
from app.keys import create_key
from app.projections.registry import build_projections
from app.projections.webhook_outbox import NAME as OUTBOX
from app.service.deals import CommandContext, DealService
from app.service.heads import HeadCache
from bench.common import Latencies, Row, concurrently, median_round
from bench.floor_app import INSERT

REP = Actor("bench.rep", "rep")
AS_REP = CommandContext(REP)
FLOOR_TABLE = "CREATE TABLE IF NOT EXISTS floor_events (LIKE events INCLUDING ALL)"
ROOT = Path(__file__).resolve().parent.parent


def activity(now: datetime | None = None) -> c.RecordBuyerActivity:
    return c.RecordBuyerActivity(
        activity_type="email_replied", occurred_at=now or datetime.now(UTC), details={}
    )


async def open_deals(service: DealService, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    for deal_id in ids:
        await service.execute(deal_id, c.OpenDeal(name="Bench", owner="bench.rep"), AS_REP)
    return ids


async def append(url: str, writers: int, commands: int, rounds: int = 3) -> Row:
    """One command = load the deal, decide, append (the service's path), on distinct deals.
    Rounds alternate with the floor's, and the median round of each counts: a single round
    of each read 38 % in one full run and 56-67 % in others of the same code."""
    # One connection more than the writers: the store wakes the log's followers on its own.
    engine = create_engine(url, pool_size=writers + 1)
    service = DealService(EventStore(engine), heads=HeadCache())
    per_writer = max(1, commands // writers // 20)  # each deal ends with ~20 more events
    deals = await open_deals(service, writers * per_writer)

    async def ours(w: int, i: int) -> None:
        await service.execute(deals[w * per_writer + i % per_writer], activity(), AS_REP)

    mine_rounds, floor_rounds = [], []
    for _ in range(rounds):
        mine_rounds.append(await concurrently(writers, commands // rounds, ours))
        floor_rounds.append(await _raw_inserts(url, writers, commands // rounds))
    await engine.dispose()
    mine, floor = median_round(mine_rounds), median_round(floor_rounds)
    return Row(
        f"append, single command, {writers} writer{'s' if writers > 1 else ''}",
        mine.rate,
        floor.rate,
        "events/s",
        mine.percentile(0.5),
        mine.percentile(0.99),
        floor.percentile(0.99),
        target="≥ 60% of floor" + ("; p99 ≤ 15 ms" if writers == 16 else ""),
        note=f"median of {rounds} alternating rounds",
    )


def _floor_row(stream: uuid.UUID, version: int) -> tuple[Any, ...]:
    now = datetime.now(UTC)
    data = json.dumps({"activity_type": "email_replied", "occurred_at": now.isoformat()})
    return (
        stream,
        version,
        uuid.uuid4(),
        "BuyerActivityRecorded",
        data,
        '{"actor":{"id":"bench.rep","role":"rep"}}',
        now,
        os.urandom(32),
    )


async def _raw_inserts(url: str, writers: int, commands: int) -> Latencies:
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=writers, max_size=writers)
    async with pool.acquire() as connection:
        await connection.execute(FLOOR_TABLE)
    streams = [uuid.uuid4() for _ in range(writers)]

    async def insert(w: int, i: int) -> None:
        async with pool.acquire() as connection:
            await connection.execute(INSERT, *_floor_row(streams[w], i + 1))

    result = await concurrently(writers, commands, insert)
    await pool.close()
    return result


def _cloudevents(deals: list[uuid.UUID], count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "//bench/mail",
            "type": "com.dealledger.activity.email_replied",
            "subject": str(random.choice(deals)),
            "time": now,
            "data": {},
        }
        for _ in range(count)
    ]


async def batch_ingest(url: str, server: Server, batches: int, clients: int = 4) -> Row:
    """POST /v1/events with 100 CloudEvents per batch (10 deals per batch), vs. a raw
    multi-row INSERT of 100 rows, at the same concurrency."""
    engine = create_engine(url, pool_size=2)
    deals = await open_deals(DealService(EventStore(engine)), clients * 10)
    await engine.dispose()
    # Client w posts payloads w*per .. (w+1)*per - 1, all on its own 10 deals: clients do
    # not race each other for a deal (that would measure retries, not ingest).
    per = batches // clients
    payloads = [
        json.dumps(_cloudevents(deals[(b // per) * 10 : (b // per) * 10 + 10], 100))
        for b in range(per * clients)
    ]
    async with server.client() as http:

        async def post(w: int, i: int) -> None:
            response = await http.post(
                "/v1/events",
                content=payloads[w * per + i],
                headers={"content-type": "application/cloudevents-batch+json"},
            )
            if response.status_code != 200:
                raise RuntimeError(f"ingest answered {response.status_code}: {response.text}")

        mine = await concurrently(clients, batches, post)
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=clients, max_size=clients)
    async with pool.acquire() as connection:
        await connection.execute(FLOOR_TABLE)
    multi = (
        "INSERT INTO floor_events (stream_id, version, event_id, type, schema_version, data,"
        " metadata, occurred_at, recorded_at, prev_hash, hash)"
        " SELECT s, v, e, t, 1, d::jsonb, m::jsonb, o, now(), NULL, h FROM unnest("
        "$1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::text[], $6::text[],"
        " $7::timestamptz[], $8::bytea[]) AS r(s, v, e, t, d, m, o, h)"
    )

    async def insert(w: int, i: int) -> None:
        stream = uuid.uuid4()
        rows = [_floor_row(stream, n + 1) for n in range(100)]
        async with pool.acquire() as connection:
            await connection.execute(multi, *(list(col) for col in zip(*rows, strict=True)))

    floor = await concurrently(clients, batches, insert)
    await pool.close()
    return Row(
        f"batch ingest, 100 CloudEvents/batch, {clients} clients",
        mine.rate * 100,
        floor.rate * 100,
        "events/s",
        mine.percentile(0.5),
        mine.percentile(0.99),
        floor.percentile(0.99),
        target="≥ 50% of floor",
    )


async def read_one_deal(deals: list[uuid.UUID], ours: Server, floor: Server, reads: int) -> Row:
    """GET /v1/deals/{id} one at a time on random deals of the loaded log, vs. the floor
    route selecting the same read-model row."""
    results: list[Latencies] = []
    for server in (ours, floor):
        prefix = "/v1" if server is ours else ""
        async with server.client() as http:

            async def get(w: int, i: int, http: httpx.AsyncClient = http, p: str = prefix) -> None:
                response = await http.get(f"{p}/deals/{random.choice(deals)}")
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text}")

            await concurrently(1, 50, get)
            results.append(await concurrently(1, reads, get))
    mine, bare = results
    return Row(
        "read one deal, GET, 1 client",
        mine.rate,
        bare.rate,
        "requests/s",
        mine.percentile(0.5),
        mine.percentile(0.99),
        bare.percentile(0.99),
        target="p99 ≤ 5 ms",
    )


async def one_client_gets(
    ours: Server, path: str, reads: int, signed_in: bool = False
) -> Latencies:
    """GET `path` `reads` times, one at a time (after two to warm up); any answer but 200
    stops the bench. `signed_in`: as a browser signed in to the pages (a session cookie)."""
    async with ours.client() as http:
        if signed_in:
            await sign_in(http, ours)

        async def get(w: int, i: int) -> None:
            response = await http.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code}: {response.text[:200]}")

        await concurrently(1, 2, get)
        return await concurrently(1, reads, get)


async def manager_reports(ours: Server, reads: int) -> list[Row]:
    """GET /v1/pipeline/health and /v1/inspections/weekly (first page) for the whole team,
    one at a time, on the loaded log: answered from read models, so p99 is what a manager
    waits. No floor: nothing simpler answers the same question."""
    rows = []
    for label, path in (
        ("pipeline health", "/v1/pipeline/health"),
        ("weekly inspection, first page", "/v1/inspections/weekly"),
    ):
        found = await one_client_gets(ours, path, reads)
        rows.append(
            Row(
                f"{label}, whole team, GET, 1 client",
                found.rate,
                None,
                "requests/s",
                found.percentile(0.5),
                found.percentile(0.99),
                target="p99 ≤ 2 s",
            )
        )
    return rows


def rebuild_all(url: str) -> dict[str, Any]:
    """Rebuild every projection in a child process (its peak RSS is the rebuild's)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.rebuild_child", url],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def copy_floor(url: str) -> tuple[int, float]:
    """The floor for rebuild: COPY the log's rows out, as fast as PostgreSQL sends them."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    received = 0

    async def sink(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)

    started = time.perf_counter()
    status = await connection.copy_from_query(
        "SELECT position, stream_id, version, type, schema_version, data, metadata,"
        " occurred_at, recorded_at FROM events ORDER BY transaction_id, position",
        output=sink,
    )
    seconds = time.perf_counter() - started
    await connection.close()
    return int(status.split()[-1]), seconds


async def projection_lag(url: str, seconds: float, writers: int = 8) -> Row:
    """Appends from `writers` tasks for `seconds` while `dealledger project` follows in its
    own process: the time from an append's commit to every read model having applied it."""
    env = {**os.environ, "DATABASE_URL": url, "DEALLEDGER_FLAG_SWEEP_SECONDS": "60"}
    projector = subprocess.Popen(  # noqa: ASYNC220 (started once, before measuring)
        [sys.executable, "-m", "app", "project"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = create_engine(url, pool_size=writers + 1)
    service = DealService(EventStore(engine), heads=HeadCache())
    deals = await open_deals(service, writers * 10)
    watcher = await asyncpg.connect(asyncpg_dsn(url))
    # Where the slowest read model stands (0 until every projection has a checkpoint).
    names = ", ".join(f"'{name}'" for name in build_projections())
    seen_sql = (  # the read models only: the webhook outbox keeps its checkpoints there too
        f"SELECT CASE WHEN count(*) = {len(build_projections())} THEN min(position) ELSE 0 END"
        f" FROM projection_checkpoints WHERE name IN ({names})"
    )
    # Measured from where every follower of the projector stands at the head: the outbox too,
    # which on a bulk-loaded log starts at its beginning (a catch-up, not a lag).
    ready_sql = "SELECT coalesce(min(position), 0) FROM projection_checkpoints WHERE name = $1"
    committed: list[tuple[int, float]] = []
    lags: list[float] = []
    try:
        head = await watcher.fetchval("SELECT coalesce(max(position), 0) FROM events")
        while (  # noqa: ASYNC110 (polling the db)
            await watcher.fetchval(seen_sql) < head
            or await watcher.fetchval(ready_sql, OUTBOX) < head
        ):
            await asyncio.sleep(0.05)
        stop = time.perf_counter() + seconds

        async def writer(w: int) -> None:
            while time.perf_counter() < stop:
                done = await service.execute(
                    deals[w * 10 + random.randrange(10)], activity(), AS_REP
                )
                committed.append((done.position or 0, time.perf_counter()))
                await asyncio.sleep(0.005)  # sustained, not saturating: ~1,000 commands/s max

        async def watch() -> None:
            pending = 0
            while time.perf_counter() < stop + 5 and (
                time.perf_counter() < stop or pending < len(committed)
            ):
                seen = await watcher.fetchval(seen_sql)
                now = time.perf_counter()
                ordered = sorted(committed[pending:])
                while ordered and ordered[0][0] <= seen:
                    lags.append(now - ordered.pop(0)[1])
                    pending += 1
                committed[pending:] = ordered
                await asyncio.sleep(0.002)

        await asyncio.gather(watch(), *(writer(w) for w in range(writers)))
    finally:
        projector.terminate()
        projector.wait(10)
        await watcher.close()
        await engine.dispose()
    measured = Latencies(lags, seconds)
    return Row(
        f"projection lag, {writers} writers, all read models",
        len(lags) / seconds,
        None,
        "events/s",
        measured.percentile(0.5),
        measured.percentile(0.99),
        target="p99 ≤ 500 ms",
        note=f"{len(committed) - len(lags)} not seen within 5 s"
        if len(committed) > len(lags)
        else "",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A uvicorn process serving `argv` on a free port, with a bearer token if any."""

    def __init__(self, argv: list[str], env: dict[str, str], token: str | None = None) -> None:
        self.port = free_port()
        self.token = token
        self.process = subprocess.Popen(
            [sys.executable, *[a.replace("{port}", str(self.port)) for a in argv]],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self, path: str) -> None:
        async with self.client() as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(path)).status_code < 500:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server on port {self.port} did not come up")

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", headers=headers, limits=limits, timeout=30
        ) as http:
            yield http

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


@contextlib.asynccontextmanager
async def servers(url: str) -> AsyncIterator[tuple[Server, Server]]:
    """dealledger (without its in-process projector: the lag scenario runs that) and the
    floor app, both on uvicorn's defaults, one worker each."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(FLOOR_TABLE)
        _, token = await create_key(connection, role="admin", name="bench")
    finally:
        await connection.close()
    ours = Server(
        ["-m", "app", "serve", "--port", "{port}", "--no-projector"], {"DATABASE_URL": url}, token
    )
    floor = Server(
        ["-m", "uvicorn", "bench.floor_app:app", "--port", "{port}", "--log-level", "warning"],
        {"DATABASE_URL": url},
    )
    try:
        await ours.ready("/readyz")
        await floor.ready("/docs")
        yield ours, floor
    finally:
        ours.stop()
        floor.stop()


async def sign_in(http: httpx.AsyncClient, ours: Server) -> None:
    """Sign `http` in to the pages with the bench's key (the session cookie stays in it)."""
    signed = await http.post("/ui/login", data={"key": ours.token or ""})
    if signed.status_code != 303:
        raise RuntimeError(f"sign-in: {signed.status_code}")


async def ui_pages(ours: Server, deals: list[uuid.UUID], reads: int) -> list[Row]:
    """The board and a deal's page as a signed-in manager's browser gets them (one client,
    one at a time), against the API's JSON for the same deal as the floor."""
    rows = []
    async with ours.client() as http:
        await sign_in(http, ours)
        for label, path_of in (
            ("page: board, default pipeline", lambda i: "/ui"),
            ("page: one deal's story", lambda i: f"/ui/deals/{deals[i % len(deals)]}"),
        ):

            async def page(w: int, i: int, path_of: Any = path_of) -> None:
                response = await http.get(path_of(i))
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

            async def api(w: int, i: int) -> None:
                response = await http.get(f"/v1/deals/{deals[i % len(deals)]}")
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

            await concurrently(1, 2, page)
            mine = await concurrently(1, reads, page)
            floor = await concurrently(1, reads, api)
            rows.append(
                Row(
                    f"{label}, GET, 1 client",
                    mine.rate,
                    floor.rate,
                    "requests/s",
                    mine.percentile(0.5),
                    mine.percentile(0.99),
                    floor.percentile(0.99),
                    target="≤ 100 ms server time at the demo's size",
                    note="floor = GET /v1/deals/{id} (JSON of one deal)",
                )
            )
    return rows
