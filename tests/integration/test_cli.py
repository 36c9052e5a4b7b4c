"""The `dealledger` command line, run as a user runs it: a separate process."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db import asyncpg_dsn, with_database
from app.events.log import NewEvent
from app.events.store import EventStore
from app.projections.registry import PROJECTIONS
from app.service.deals import DealService
from app.service.simulation import run_workload
from tests.support import caught_up, dealledger, environment, following


async def test_migrate_uses_database_url_when_set(server_url: str) -> None:
    name = f"dealledger_cli_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(server_url, name)
        result = dealledger("migrate", env=environment(DATABASE_URL=url))
        assert result.returncode == 0, result.stderr
        target = await asyncpg.connect(asyncpg_dsn(url))
        assert await target.fetchval("SELECT to_regclass('events') IS NOT NULL")
        await target.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.db  # starts an embedded PostgreSQL of its own
def test_migrate_starts_embedded_postgres_when_database_url_is_unset(tmp_path: Path) -> None:
    env = {k: v for k, v in environment(DEALLEDGER_DATA_DIR=str(tmp_path)).items()}
    env.pop("XDG_RUNTIME_DIR", None)
    result = dealledger("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    assert "XDG_RUNTIME_DIR" not in result.stderr  # no warning on every command
    # How a newcomer opens psql on it: the URL of the service's role, and of the owner.
    url = dealledger("db-url", env=env)
    assert url.returncode == 0 and url.stdout.startswith("postgresql://dealledger_app@")
    assert str(tmp_path) in url.stdout
    owner = dealledger("db-url", "--owner", env=env)
    assert owner.returncode == 0 and "dealledger_app" not in owner.stdout
    # Idempotent: a second run finds the data and the migrations already there.
    assert dealledger("migrate", env=environment(DEALLEDGER_DATA_DIR=str(tmp_path))).returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.db  # starts an embedded PostgreSQL of its own
def test_serve_on_a_fresh_embedded_database_becomes_ready(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--dev"],
        env=environment(DEALLEDGER_DATA_DIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"{base}/readyz", timeout=1)
                if response.status_code == 200:
                    # The embedded default connects as the role that cannot change events.
                    assert response.json()["database_role"] == "dealledger_app"
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)
        # Over a real socket: a chunked body (no Content-Length) over the limit is cut off.
        chunked = (b"x" * 65536 for _ in range(32))
        refused = httpx.post(f"{base}/v1/deals", content=chunked, timeout=10)
        assert refused.status_code == 413
        created = httpx.post(f"{base}/v1/deals", json={"name": "D", "owner": "o"}, timeout=10)
        assert created.status_code == 201  # --dev: no key needed
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in output
    assert "WARNING: dev mode" in output
    assert str(tmp_path) in output and "dealledger db-url" in output  # where the data is
    # The embedded PostgreSQL started for serve stops with it.
    time.sleep(0.5)
    pid_file = tmp_path / "pgdata" / "postmaster.pid"
    assert not pid_file.exists(), "serve left its embedded PostgreSQL running"


async def test_verify_exits_non_zero_on_a_tampered_log(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    deal = uuid.uuid4()
    await store.append(deal, 0, [NewEvent("BuyerActivityRecorded", {"n": i}) for i in range(3)])
    ok = dealledger("verify", env=environment(DATABASE_URL=database_url))
    assert ok.returncode == 0, ok.stderr
    assert "3 events checked" in ok.stdout

    await pg.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    await pg.execute(
        "UPDATE events SET type = 'Forged' WHERE stream_id = $1 AND version IN (1, 3)", deal
    )
    broken = dealledger("verify", str(deal), env=environment(DATABASE_URL=database_url))
    assert broken.returncode == 1
    # Every broken link, not only the first.
    assert f"stream {deal} version 1" in broken.stdout
    assert f"stream {deal} version 3" in broken.stdout
    assert "2 of 3 events do not verify" in broken.stdout


@pytest.mark.parametrize("command", [["--help"], ["serve", "--help"]])
def test_help_describes_the_commands(command: list[str]) -> None:
    result = dealledger(*command, env=environment())
    assert result.returncode == 0
    assert "dealledger" in result.stdout or "--port" in result.stdout


def test_help_reflows_docstrings_instead_of_breaking_lines_where_the_source_does() -> None:
    # Rich's default markup kept every newline of a wrapped docstring ("... exit" / "1 if").
    result = dealledger("--help", env=environment(COLUMNS="200"))
    assert result.returncode == 0
    assert "list every broken link, exit 1 if there is one." in result.stdout


async def test_rebuild_replays_every_projection_and_reports_its_rate(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    workload = await run_workload(DealService(store), deals=12, commands=150, seed=1)
    result = dealledger("rebuild", env=environment(DATABASE_URL=database_url))
    assert result.returncode == 0, result.stderr
    for name in PROJECTIONS:
        assert f"{name}: {workload.events} events in" in result.stdout
    assert await pg.fetchval("SELECT count(*) FROM deals") == 12
    versions = await pg.fetchval("SELECT sum(version) FROM deals")
    assert versions == workload.events

    unknown = dealledger("rebuild", "nope", env=environment(DATABASE_URL=database_url))
    assert unknown.returncode == 2
    assert "no projection 'nope'" in unknown.stderr


async def test_keys_create_prints_the_token_once_and_stores_only_its_hash(
    database_url: str, pg: asyncpg.Connection
) -> None:
    env = environment(DATABASE_URL=database_url)
    created = dealledger("keys", "create", "--role", "ingest", "--name", "zoom-sync", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("dl_") and len(token) > 40
    row = await pg.fetchrow(
        "SELECT key_id, role, token_hash FROM api_keys WHERE name = 'zoom-sync'"
    )
    assert row["role"] == "ingest"
    assert row["token_hash"] == hashlib.sha256(token.encode()).digest()

    listed = dealledger("keys", "list", env=env)
    assert listed.returncode == 0 and "zoom-sync" in listed.stdout
    assert token not in listed.stdout
    revoked = dealledger("keys", "revoke", str(row["key_id"]), env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert await pg.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys WHERE name = 'zoom-sync'")
    bad_role = dealledger("keys", "create", "--role", "god", "--name", "x", env=env)
    assert bad_role.returncode == 2 and "role must be one of" in bad_role.stderr
    # The README's `--name "$USER"` with USER unset: a sensible default name, no traceback.
    anonymous = {k: v for k, v in env.items() if k not in ("USER", "LOGNAME")}
    unnamed = dealledger("keys", "create", "--role", "rep", "--name", "", env=anonymous)
    assert unnamed.returncode == 0, unnamed.stderr
    assert "Traceback" not in unnamed.stderr
    named = await pg.fetchval(
        "SELECT name FROM api_keys WHERE role = 'rep' ORDER BY created_at DESC LIMIT 1"
    )
    assert named.strip()


async def test_demo_lays_down_months_of_pipeline_once(
    database_url: str, pg: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    env = environment(DATABASE_URL=database_url)
    result = dealledger("demo", "--deals", "25", "--days", "60", "--seed", "3", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("31 deals")  # and six textbook problem deals
    span = await pg.fetchrow(
        "SELECT min(recorded_at) AS first, max(recorded_at) AS last FROM events"
    )
    assert (span["last"] - span["first"]).days >= 30  # simulated history, not seconds
    in_order = await pg.fetchval(
        "SELECT bool_and(recorded_at >= previous) FROM (SELECT recorded_at,"
        " lag(recorded_at) OVER (ORDER BY position) AS previous FROM events) AS e"
    )
    assert in_order
    assert dealledger("verify", env=env).returncode == 0  # the hash chains hold

    async with following(database_url):
        await caught_up(pg)
    listed = await client.get("/v1/deals", params={"limit": 100})
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert len(items) == 31
    assert len({d["stage"] for d in items}) > 1  # deals spread over the pipeline
    assert "Quiet Harbor" in {d["name"] for d in items}
    targets = await pg.fetchval("SELECT count(*) FROM sales_targets")
    assert targets == 5  # this quarter's, one per demo owner

    again = dealledger("demo", env=env)
    assert again.returncode == 1
    assert "already holds" in again.stderr
