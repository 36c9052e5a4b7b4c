"""One projector at a time, however many processes run: elected by an advisory lock, with
failover when the elected process dies; and `serve --workers N` over one database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import httpx

from app.db import asyncpg_dsn
from app.events.store import EventStore
from app.projections.registry import PROJECTIONS
from app.projections.replay import rebuild_fast
from app.projections.runner import PROJECTOR_APP, projector_holder
from app.service.deals import DealService
from app.service.simulation import run_workload
from tests.keys import KEYS
from tests.support import caught_up, environment, read_models, settle

PROJECTORS = (
    "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE $1 ORDER BY pid"
)


@contextlib.contextmanager
def processes(
    argvs: list[list[str]], env: dict[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "app", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for argv in argvs
    ]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


async def _until(pg: asyncpg.Connection, sql: str, *args: object, within: float = 60) -> object:
    """Poll until `sql` answers something truthy (generous bound: no timing is asserted)."""
    for _ in range(int(within / 0.1)):
        found = await pg.fetchval(sql, *args)
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"never true: {sql}")


async def test_one_of_three_projectors_projects_and_another_takes_over_when_it_is_killed(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    service = DealService(store)
    await run_workload(service, deals=20, commands=300, seed=31)
    env = environment(DATABASE_URL=database_url)
    with processes([["project"]] * 3, env) as projectors:
        pids = {p.pid for p in projectors}
        await _until(
            pg,
            "SELECT count(*) = 3 FROM pg_stat_activity WHERE application_name LIKE $1",
            f"{PROJECTOR_APP}%",
        )
        await caught_up(pg)
        holder = await projector_holder(pg)
        assert holder is not None
        elected = int(holder.rsplit(":", 1)[1])
        assert elected in pids
        # Standbys wait on the projector's lock alone (polled), not blocked on every
        # projection's lock with a connection each: no advisory lock is waited for.
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        assert await pg.fetchval(waiting) == 0

        os.killpg(elected, signal.SIGKILL)
        next(p for p in projectors if p.pid == elected).wait(10)
        taken = await _until(
            pg,
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1"
            " AND application_name NOT LIKE $2 AND pid IN (SELECT pid FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted)",
            f"{PROJECTOR_APP}%",
            f"%:{elected}",
        )
        survivor = int(str(taken).rsplit(":", 1)[1])
        assert survivor in pids - {elected}

        # What is appended after the kill is projected by the new projector...
        await run_workload(service, deals=10, commands=200, seed=32)
        await caught_up(pg)
    # ...and the read models equal a rebuild of the whole log.
    now = datetime.now(UTC)
    await settle(pg, now)
    followed = await read_models(pg)
    assert await rebuild_fast(asyncpg_dsn(database_url), list(PROJECTIONS.values())) is not None
    await settle(pg, now)
    assert await read_models(pg) == followed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_with_two_workers_answers_and_elects_one_projector(
    database_url: str, pg: asyncpg.Connection
) -> None:
    unused_port = free_port()
    env = environment(DATABASE_URL=database_url)
    argv = ["serve", "--workers", "2", "--port", str(unused_port)]
    with processes([argv], env):
        # Both workers ran their lifespan: two projector candidates, one elected.
        await _until(
            pg,
            "SELECT count(DISTINCT pid) = 2 FROM pg_stat_activity WHERE application_name LIKE $1",
            f"{PROJECTOR_APP}%",
        )
        holder = await projector_holder(pg)
        assert holder is not None and holder.startswith(PROJECTOR_APP)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{unused_port}", headers=KEYS["rep"].headers, timeout=30
        ) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            opened = await asyncio.gather(
                *(
                    http.post("/v1/deals", json={"name": f"Deal {n}", "owner": "rep@example.com"})
                    for n in range(20)
                )
            )
            assert {r.status_code for r in opened} == {201}, [r.text for r in opened]
            last = max(r.json()["position"] for r in opened)
            # The elected worker projects what every worker appended.
            listed = await http.get("/v1/deals", params={"min_position": last, "limit": 50})
            assert listed.status_code == 200, listed.text
            assert len(listed.json()["items"]) == 20
