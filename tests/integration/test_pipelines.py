"""Pipelines against the real log: read models rebuilt from a log holding pipeline versions,
migrations and deals on several versions equal what was built incrementally; the CLI
applies, shows and exports documents."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import yaml

from app.db import asyncpg_dsn
from app.domain import commands as c
from app.domain.decide import Actor
from app.domain.identifiers import pipeline_stream_id
from app.domain.pipeline import PipelineDocument
from app.domain.pipeline_versions import PublishPipeline
from app.events.store import EventStore
from app.projections.registry import build_projections
from app.projections.runner import rebuild
from app.service.deals import CommandContext, DealService
from app.service.pipelines import PipelineService
from tests.support import caught_up, dealledger, environment, following, read_models, settle

EXAMPLES = Path(__file__).parents[2] / "examples" / "pipelines"
ADMIN = CommandContext(Actor("admin-key", "admin", "Ada"))
REP = CommandContext(Actor("rep-key", "rep", "Rick"))


def document(name: str) -> PipelineDocument:
    return PipelineDocument.model_validate(yaml.safe_load((EXAMPLES / name).read_text()))


async def test_rebuild_equals_incremental_with_pipelines_versions_and_migrations(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    deals = DealService(store)
    pipelines = PipelineService(deals)
    funnel = document("funnel.yaml")
    async with following(database_url, batch_size=7):
        await pipelines.publish(PublishPipeline(funnel, creating=True), ADMIN)
        opened = [
            (
                await deals.open(
                    c.OpenDeal(f"d{i}", "rick", None, Decimal(1000), None, date(2027, 1, 1), p), REP
                )
            )
            for i, p in enumerate(["funnel", "funnel", "default"])
        ]
        first, second, on_default = (result.state.deal_id for result in opened)
        stricter = funnel.model_copy(update={"label": "Stricter funnel"})
        stricter = PipelineDocument.model_validate(
            {
                **stricter.model_dump(),
                "stages": [
                    {**s.model_dump(), "stall": {"inactive_days": 1}} for s in stricter.stages
                ],
            }
        )
        await pipelines.publish(PublishPipeline(stricter, creating=False), ADMIN)
        await deals.execute(first, c.MigrateDeal(reason="stricter"), ADMIN)
        await deals.execute(
            second,
            c.RecordEvidence(
                evidence_id=pipeline_stream_id("e"),
                kind="email",
                criteria=("need_confirmed", "contact_engaged"),
                summary="yes",
                occurred_at=datetime.now(UTC),
            ),
            REP,
        )
        await deals.execute(second, c.AdvanceStage(to_stage="qualified"), REP)
        await deals.execute(second, c.RegressStage(to_stage="lead", trigger="need_changed"), REP)
        await deals.execute(on_default, c.DisqualifyDeal(reason="cannot_afford"), REP)
        await caught_up(pg)
    later = datetime.now(UTC) + timedelta(days=3)
    await settle(pg, later)
    incremental = await read_models(pg)
    assert len(incremental["deals"]) == 3  # pipeline streams are no deals
    versions = {
        r[0]: r[1]
        for r in await pg.fetch(
            "SELECT name, (state->>'pipeline_version')::int FROM deals JOIN deal_states"
            " USING (deal_id)"
        )
    }
    assert versions == {"d0": 2, "d1": 1, "d2": 1}
    for projection in build_projections().values():  # fresh: no cached pipeline versions
        await rebuild(asyncpg_dsn(database_url), projection)
    await settle(pg, later)
    assert await read_models(pg) == incremental


async def test_the_cli_applies_shows_and_exports_pipelines(
    database_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    env = environment(DATABASE_URL=database_url)
    applied = dealledger("pipelines", "apply", str(EXAMPLES / "funnel.yaml"), env=env)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "funnel: published version 1"
    again = dealledger("pipelines", "apply", str(EXAMPLES / "funnel.yaml"), env=env)
    assert again.stdout.strip() == "funnel: unchanged at version 1"

    exported = dealledger("pipelines", "export", "funnel", "--json", env=env)
    assert exported.returncode == 0, exported.stderr
    as_json = json.loads(exported.stdout)
    assert PipelineDocument.model_validate(as_json) == document("funnel.yaml")
    as_json["stages"][0]["expected_days"] = 5
    edited = tmp_path / "funnel.json"
    edited.write_text(json.dumps(as_json))
    revised = dealledger("pipelines", "apply", str(edited), "--note", "faster leads", env=env)
    assert revised.stdout.strip() == "funnel: published version 2", revised.stderr

    shown = dealledger("pipelines", "show", "funnel", "--version", "1", env=env)
    assert shown.stdout.splitlines()[:2] == [
        "funnel v1: Four-stage funnel",
        "  lead: 10%, 10 days expected",
    ]
    default = dealledger("pipelines", "export", "default", env=env)
    assert yaml.safe_load(default.stdout) == yaml.safe_load((EXAMPLES / "default.yaml").read_text())

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**as_json, "late_stages": ["limbo"]}))
    refused = dealledger("pipelines", "apply", str(broken), env=env)
    assert refused.returncode == 2 and "late_stages: unknown stage 'limbo'" in refused.stderr
    missing = dealledger("pipelines", "show", "nope", env=env)
    assert missing.returncode == 1 and "no pipeline 'nope'" in missing.stderr
    note = await pg.fetchval(
        "SELECT data->>'note' FROM events WHERE stream_id = $1 AND version = 2",
        pipeline_stream_id("funnel"),
    )
    assert note == "faster leads"
