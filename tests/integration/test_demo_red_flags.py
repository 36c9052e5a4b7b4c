"""`dealledger demo`'s pipeline, laid down through the real service and read through HTTP:
at least one of every pipeline red flag and every flag kind, at plausible rates."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import httpx

from app.domain.flags import KINDS
from app.domain.pipeline_health import RULES
from app.events.store import EventStore
from app.service.demo_showcase import NEGLECTED_SHARE, set_quarter_targets, showcase
from app.service.simulation import lay_down_history
from tests.keys import KEYS
from tests.support import caught_up, following

MANAGER = KEYS["manager"].headers


async def test_the_demo_shows_every_red_flag_and_flag_kind(
    store: EventStore, database_url: str, pg: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    end = datetime.now(UTC)
    await lay_down_history(
        store,
        deals=200,
        seed=7,
        days=120,
        end=end,
        scripted=showcase,
        neglected_share=NEGLECTED_SHARE,
    )
    await set_quarter_targets(pg, end)
    async with following(database_url):
        await caught_up(pg)
    health = await client.get("/v1/pipeline/health", headers=MANAGER)
    assert health.status_code == 200, health.text
    assert {f["rule"] for f in health.json()["findings"]} == set(RULES)
    assert health.json()["dead_leads"]

    won = await pg.fetchval("SELECT count(*) FROM deals WHERE status = 'won'")
    lost = await pg.fetchval("SELECT count(*) FROM deals WHERE status = 'disqualified'")
    assert 0.15 <= won / (won + lost) <= 0.30
    stages = await pg.fetch("SELECT DISTINCT stage FROM deals WHERE status = 'open'")
    assert len(stages) == 5  # open deals in every stage
    for kind in KINDS:  # as of the end, one deal at least stands flagged with each kind
        params: dict[str, str | int] = {"as_of": end.isoformat(), "kind": kind, "limit": 1}
        found = await client.get("/v1/flags", params=params, headers=MANAGER)
        assert found.status_code == 200, found.text
        assert found.json()["items"], kind
