"""An event one projection cannot apply stops that projection alone, loudly (recorded, in
/readyz, /metrics and `dealledger projections status`), never skipping the event and never
spinning; the others go on, and a fixed release resumes it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg

from app.db import asyncpg_dsn
from app.projections.deals import DealsProjection
from app.projections.runner import Envelope, ProjectionRunner, failures
from app.settings import Settings
from tests.api.conftest import REP
from tests.support import app_client, dealledger, environment


class Fragile(DealsProjection):
    """The deals projection with a bug for one deal, as a release might ship it."""

    name = "fragile"
    tables: tuple[str, ...] = ("fragile_deals",)

    def __init__(self, poison: uuid.UUID) -> None:
        self.poison, self.fixed, self.attempts = poison, False, 0

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        self.attempts += 1
        if not self.fixed and any(e.stream_id == self.poison for e in batch):
            raise ValueError("cannot handle this deal")
        await connection.execute("SELECT 1")  # stands for its own writes


async def test_a_poison_event_stops_only_its_projection_until_the_fix(
    database_url: str, owner_url: str, pg: asyncpg.Connection
) -> None:
    await pg.execute("CREATE TABLE fragile_deals (deal_id uuid)")
    await pg.execute("GRANT ALL ON fragile_deals TO dealledger_app")
    async with app_client(database_url, Settings(run_projector=False)) as http:
        first = (await http.post("/v1/deals", json={"name": "A", "owner": "o"}, headers=REP)).json()
        poison = (
            await http.post("/v1/deals", json={"name": "B", "owner": "o"}, headers=REP)
        ).json()
        last = (await http.post("/v1/deals", json={"name": "C", "owner": "o"}, headers=REP)).json()
        fragile = Fragile(uuid.UUID(poison["id"]))
        runner = ProjectionRunner(
            asyncpg_dsn(database_url),
            [DealsProjection(), fragile],
            poll_interval=0.05,
            stopped_retry_interval=0.5,
        )
        task = asyncio.create_task(runner.run())
        try:
            await asyncio.sleep(2)
            (stopped,) = await failures(pg)
            assert stopped["projection"] == "fragile"
            assert stopped["event_id"] is not None and stopped["event_type"] == "DealOpened"
            assert "cannot handle this deal" in stopped["error"]
            opened_b = await pg.fetchval(
                "SELECT position FROM events WHERE stream_id = $1 AND version = 1",
                uuid.UUID(poison["id"]),
            )
            assert stopped["position"] == opened_b  # stopped at the event, not past it
            checkpoint = await pg.fetchval(
                "SELECT position FROM projection_checkpoints WHERE name = 'fragile'"
            )
            assert checkpoint < opened_b
            # The others went on: the deals read model has every deal.
            count = await pg.fetchval("SELECT count(*) FROM deals")
            assert count == 3
            assert fragile.attempts < 40  # retried at intervals, no spinning

            ready = await http.get("/readyz")
            assert ready.json()["projections_stopped"][0]["projection"] == "fragile"
            metrics = (await http.get("/metrics")).text
            assert 'dealledger_projection_stopped{projection="fragile"} 1.0' in metrics
            status = dealledger("projections", "status", env=environment(DATABASE_URL=database_url))
            assert status.returncode == 1, status.stderr  # a stopped projection fails a check
            assert "fragile" in status.stdout and "STOPPED at position" in status.stdout

            fragile.fixed = True  # a release with the fix
            await asyncio.sleep(1.5)
            assert await failures(pg) == []
            checkpoint = await pg.fetchval(
                "SELECT position FROM projection_checkpoints WHERE name = 'fragile'"
            )
            assert checkpoint == last["position"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert first["position"] < last["position"]


async def test_a_transaction_holding_projections_back_shows_in_readyz_and_metrics(
    database_url: str, owner_url: str
) -> None:
    blocker = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        async with app_client(database_url, Settings()) as http:
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.fetchval("SELECT pg_current_xact_id()")  # an id: readers wait for it
            await asyncio.sleep(0.2)
            posted = await http.post("/v1/deals", json={"name": "A", "owner": "o"}, headers=REP)
            assert posted.status_code == 201
            await asyncio.sleep(0.5)
            ready = (await http.get("/readyz")).json()
            assert ready["projection_lag"]["deals"] >= 1  # stalled behind the open transaction
            assert ready["oldest_transaction_seconds"] >= 0.5
            metrics = (await http.get("/metrics")).text
            assert 'dealledger_projection_lag_events{projection="deals"}' in metrics
            assert "dealledger_oldest_transaction_seconds" in metrics
            await transaction.rollback()
            for _ in range(50):
                ready = (await http.get("/readyz")).json()
                if ready["projection_lag"]["deals"] == 0:
                    break
                await asyncio.sleep(0.1)
            assert ready["projection_lag"]["deals"] == 0
    finally:
        await blocker.close()
