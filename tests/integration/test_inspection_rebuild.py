"""Pipeline health, the inspections, forecast accuracy and stage facts, each asked as of a
time, answer exactly the same after every read model is rebuilt from the log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from app.db import asyncpg_dsn
from app.domain.periods import Period
from app.events.store import EventStore
from app.projections.registry import build_projections
from app.projections.runner import rebuild
from app.service.demo_showcase import NEGLECTED_SHARE, set_quarter_targets, showcase
from app.service.simulation import lay_down_history
from app.settings import Settings
from tests.keys import KEYS
from tests.support import app_client, caught_up, following

MANAGER = KEYS["manager"].headers


async def answers(client: httpx.AsyncClient, end: datetime, deal_id: str) -> dict[str, Any]:
    at = (end - timedelta(days=3)).isoformat()
    quarter = str(Period.quarter_of(end.date()))
    urls: dict[str, dict[str, Any]] = {
        "/v1/pipeline/health": {"as_of": at},
        "/v1/inspections/weekly": {"as_of": at},
        "/v1/inspections/monthly": {"as_of": at},
        "/v1/inspections/quarterly": {"as_of": at},
        "/v1/analytics/forecast-accuracy": {"period": quarter, "as_of": at, "periods": 2},
        "/v1/pipeline": {"as_of": at, "limit": 500},
        f"/v1/deals/{deal_id}/stage-facts": {"as_of": at},
    }
    found = {}
    for url, params in urls.items():
        response = await client.get(url, params=params, headers=MANAGER)
        assert response.status_code == 200, (url, response.text)
        found[url] = response.json()
    return found


async def test_as_of_answers_survive_a_rebuild(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    end = datetime.now(UTC)
    laid = await lay_down_history(
        store,
        deals=40,
        seed=3,
        days=90,
        end=end,
        scripted=showcase,
        neglected_share=NEGLECTED_SHARE,
    )
    await set_quarter_targets(pg, end)
    async with following(database_url):
        await caught_up(pg)
    settings = Settings(run_projector=False)
    deal_id = str(laid.deals[0])
    async with app_client(database_url, settings) as client:
        before = await answers(client, end, deal_id)
    assert before["/v1/pipeline/health"]["findings"]
    assert before["/v1/inspections/weekly"]["deals"]
    for projection in build_projections().values():
        await rebuild(asyncpg_dsn(database_url), projection)
    async with app_client(database_url, settings) as client:
        after = await answers(client, end, deal_id)
    assert after == before
