"""The verifiable log against the real database: the sequencer's tree and checkpoints are
what an independent computation from the raw rows says, and an auditor holding checkpoints
catches what a superuser can do behind the triggers."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.db import asyncpg_dsn
from app.events.hashing import expected_hash
from app.events.log import NewEvent
from app.events.notes import Signer
from app.events.store import EventStore, record_of
from app.projections.log_tree import LogInconsistent, LogTree
from app.projections.runner import Envelope, apply_next_batch, rebuild
from tests.support import dealledger, environment

SIGNER = Signer.generate("test.example/log")


def independent_root(leaf_entries: list[bytes]) -> bytes:
    """RFC 6962 MTH written out here, not with the app's code."""

    def mth(items: list[bytes]) -> bytes:
        if len(items) == 1:
            return hashlib.sha256(b"\x00" + items[0]).digest()
        k = 1
        while k * 2 < len(items):
            k *= 2
        return hashlib.sha256(b"\x01" + mth(items[:k]) + mth(items[k:])).digest()

    return mth(leaf_entries) if leaf_entries else hashlib.sha256(b"").digest()


def independent_open(note: str, public: bytes) -> tuple[str, int, bytes]:
    """Verify a C2SP signed checkpoint with nothing but cryptography's Ed25519."""
    text, _, signatures = note.rpartition("\n\n")
    line = signatures.strip()
    assert line.startswith("\u2014 test.example/log ")
    blob = base64.b64decode(line.split(" ")[2])
    key_hash = hashlib.sha256(b"test.example/log\n\x01" + public).digest()[:4]
    assert blob[:4] == key_hash
    Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], (text + "\n").encode())
    origin, size, root = text.split("\n")
    return origin, int(size), base64.b64decode(root)


async def fill(store: EventStore, deals: int, events_each: int) -> list[UUID]:
    ids = [uuid.uuid4() for _ in range(deals)]
    for round_ in range(events_each):
        for deal in ids:
            data = {
                "activity_type": "email_replied",
                "occurred_at": "2026-11-20T10:00:00Z",
                "details": {"n": round_},
            }
            await store.append(deal, round_, [NewEvent("BuyerActivityRecorded", data)])
    return ids


async def sequence(database_url: str, tree: LogTree, limit: int = 7) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await start(connection)
        while await apply_next_batch(connection, tree, limit):
            pass
    finally:
        await connection.close()


async def start(connection: asyncpg.Connection) -> None:
    await connection.execute(
        "INSERT INTO projection_checkpoints (name) VALUES ('log_tree') ON CONFLICT DO NOTHING"
    )


async def checkpoints(pg: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await pg.fetch("SELECT * FROM log_checkpoints ORDER BY tree_size"))


async def test_the_tree_and_its_checkpoints_match_an_independent_computation(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    await fill(store, deals=5, events_each=6)
    await sequence(database_url, LogTree(SIGNER, origin="test.example/log", every_events=10))
    signed = await checkpoints(pg)
    # Batches of 7: the first is signed at once, then each batch 10+ past the last one.
    assert [c["tree_size"] for c in signed] == [7, 21]
    hashes = [
        r["hash"]
        for r in await pg.fetch("SELECT hash FROM events ORDER BY transaction_id, position")
    ]
    for checkpoint in signed:
        origin, size, root = independent_open(checkpoint["note"], SIGNER.verifier.public)
        assert origin == "test.example/log" and size == checkpoint["tree_size"]
        assert root == independent_root(hashes[:size]) == checkpoint["root_hash"]


async def test_a_sequencer_killed_mid_batch_resumes_with_identical_roots(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    await fill(store, deals=4, events_each=5)

    class Killed(LogTree):
        async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
            await super().apply(connection, batch)
            raise RuntimeError("killed after writing the batch, before its commit")

    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        tree = LogTree(SIGNER, every_events=3)
        await start(connection)
        await apply_next_batch(connection, tree, 6)
        with pytest.raises(RuntimeError):
            await apply_next_batch(connection, Killed(SIGNER, every_events=3), 6)
    finally:
        await connection.close()
    await sequence(database_url, tree)
    nodes = await pg.fetch("SELECT * FROM log_nodes ORDER BY height, index")
    hashes = [r["hash"] for r in await pg.fetch("SELECT hash FROM events ORDER BY position")]
    for checkpoint in await checkpoints(pg):
        assert checkpoint["root_hash"] == independent_root(hashes[: checkpoint["tree_size"]])
    # Rebuilt from the log: the same subtrees, and the signed checkpoints agree all along.
    assert await rebuild(asyncpg_dsn(database_url), tree, batch_size=5) == 20
    assert await pg.fetch("SELECT * FROM log_nodes ORDER BY height, index") == nodes


async def tamper(pg: asyncpg.Connection, sql: str, *args: object) -> None:
    await pg.execute("ALTER TABLE events DISABLE TRIGGER USER")
    await pg.execute(sql, *args)
    await pg.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_delete")


async def recompute_chain(pg: asyncpg.Connection, deal: UUID) -> None:
    """What an attacker with the app's own hashing does after an edit."""
    rows = await pg.fetch(
        "SELECT position, stream_id, version, event_id, type, schema_version,"
        " data::text AS data, metadata::text AS metadata, occurred_at, recorded_at,"
        " transaction_id::text::bigint AS transaction_id, prev_hash, hash"
        " FROM events WHERE stream_id = $1 ORDER BY version",
        deal,
    )
    prev = None
    for row in rows:
        digest = expected_hash(record_of(row), prev)
        await tamper(
            pg,
            "UPDATE events SET prev_hash = $2, hash = $3 WHERE position = $1",
            row["position"],
            prev,
            digest,
        )
        prev = digest


def audit(owner_url: str, kept: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = dealledger(
        "audit", "--checkpoint", str(kept), "--json", *extra,
        env=environment(DATABASE_URL=owner_url),
    )  # fmt: skip
    assert result.returncode in (0, 1) and result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
async def kept(
    store: EventStore, database_url: str, owner_url: str, pg: asyncpg.Connection, tmp_path: Path
) -> tuple[Path, list[UUID]]:
    """A log of 3 deals x 4 events, sequenced and signed, its checkpoints exported to a
    directory the auditor keeps, with the verifier key."""
    deals = await fill(store, deals=3, events_each=4)
    tree = LogTree(SIGNER, origin="test.example/log", every_events=3)
    await sequence(database_url, tree, limit=3)  # checkpoints at 3, 6, 9, 12
    exported = dealledger(
        "checkpoints", "export", str(tmp_path / "kept"), env=environment(DATABASE_URL=owner_url)
    )
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "log.vkey").write_text(SIGNER.verifier.encode())
    return tmp_path, deals


async def test_the_auditor_passes_an_untouched_log(
    kept: tuple[Path, list[UUID]], owner_url: str
) -> None:
    directory, _ = kept
    files = sorted((directory / "kept").glob("*.checkpoint"))
    assert [f.name for f in files] == [f"{n:015d}.checkpoint" for n in (3, 6, 9, 12)]
    code, report = audit(owner_url, directory / "kept", "--public-key", str(directory / "log.vkey"))
    assert code == 0, report
    assert report["valid"] and report["events"] == 12
    assert all(c["status"] == "ok" for c in report["checkpoints"])


async def test_an_edit_with_a_recomputed_chain_is_named_by_leaf(
    kept: tuple[Path, list[UUID]], owner_url: str, pg: asyncpg.Connection
) -> None:
    directory, deals = kept
    victim = deals[1]
    position, leaf = await pg.fetchrow(
        "SELECT e.position, l.leaf_index FROM events e JOIN log_leaves l USING (position)"
        " WHERE e.stream_id = $1 AND e.version = 2",
        victim,
    )
    await tamper(pg, "UPDATE events SET data = '{\"n\": 99}' WHERE position = $1", position)
    await recompute_chain(pg, victim)
    code, report = audit(owner_url, directory / "kept", "--public-key", str(directory / "log.vkey"))
    assert code == 1
    findings = report["findings"]
    assert not [f for f in findings if f["kind"] == "chain"]  # the chain itself holds
    altered = [f for f in findings if f["kind"] == "altered"]
    assert altered[0]["leaf_index"] == leaf and altered[0]["stream_id"] == str(victim)
    assert {f["version"] for f in altered} == {2, 3, 4}  # the recomputed links after it


async def test_deleting_a_deals_last_event_is_caught(
    kept: tuple[Path, list[UUID]], owner_url: str, pg: asyncpg.Connection
) -> None:
    directory, deals = kept
    await tamper(pg, "DELETE FROM events WHERE stream_id = $1 AND version = 4", deals[0])
    code, report = audit(owner_url, directory / "kept", "--public-key", str(directory / "log.vkey"))
    assert code == 1
    missing = [f for f in report["findings"] if f["kind"] == "missing"]
    assert [(f["stream_id"], f["version"]) for f in missing] == [(str(deals[0]), 4)]


async def test_cutting_the_end_of_the_log_is_truncation(
    kept: tuple[Path, list[UUID]], owner_url: str, pg: asyncpg.Connection
) -> None:
    directory, _ = kept
    await tamper(
        pg,
        "DELETE FROM events WHERE position IN"
        " (SELECT position FROM events ORDER BY position DESC LIMIT 3)",
    )
    code, report = audit(owner_url, directory / "kept", "--public-key", str(directory / "log.vkey"))
    assert code == 1
    assert report["checkpoints"][-1]["status"] == "truncated"
    assert any(f["kind"] == "truncated" for f in report["findings"])


async def test_a_checkpoint_signed_by_another_key_is_refused(
    kept: tuple[Path, list[UUID]], owner_url: str
) -> None:
    directory, _ = kept
    other = directory / "other.vkey"
    other.write_text(Signer.generate("test.example/log").verifier.encode())
    code, report = audit(owner_url, directory / "kept", "--public-key", str(other))
    assert code == 1 and report["signature_failures"]


async def test_the_sequencer_refuses_to_sign_over_a_changed_history(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    await fill(store, deals=2, events_each=3)
    tree = LogTree(SIGNER, every_events=2)
    await sequence(database_url, tree)
    signed = len(await checkpoints(pg))
    # Behind the service's back: the stored tree no longer has the root it signed.
    await pg.execute("UPDATE log_nodes SET hash = sha256(hash) WHERE index = 0")
    await fill(store, deals=1, events_each=3)
    with pytest.raises(LogInconsistent):
        await sequence(database_url, tree)
    assert len(await checkpoints(pg)) == signed


async def test_reordering_the_log_is_caught(
    kept: tuple[Path, list[UUID]], owner_url: str, pg: asyncpg.Connection
) -> None:
    """Position and transaction id are not in an event's hash; its leaf index pins them."""
    directory, _ = kept
    latest = await pg.fetchval("SELECT max(transaction_id) FROM events")
    await tamper(pg, "UPDATE events SET transaction_id = $1 WHERE position = 1", latest)
    code, report = audit(owner_url, directory / "kept", "--public-key", str(directory / "log.vkey"))
    assert code == 1
    moved = [f for f in report["findings"] if f["kind"] == "moved"]
    assert moved and moved[0]["leaf_index"] == 0 and moved[0]["position"] == 1
