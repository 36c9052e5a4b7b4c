"""Where the auditor reads the log from: the database, or the HTTP API. Either way it trusts
only the checkpoints it kept (see app.events.audit); a lying source fails their roots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from app.events.audit import AuditReport, LogAudit, StoredLeaf
from app.events.log import Checkpoint, RecordedEvent
from app.events.notes import NoteError, TreeHead, Verifier, open_checkpoint
from app.events.store import read_all_on, record_of

PAGE = 5000
Progress = Callable[[int], None]


def checkpoint_files(paths: list[Path]) -> list[Path]:
    """The files named, and every `*.checkpoint` file in a directory named."""
    found: list[Path] = []
    for path in paths:
        found += sorted(path.glob("*.checkpoint")) if path.is_dir() else [path]
    return found


def open_checkpoints(
    files: list[Path], verifiers: list[Verifier]
) -> tuple[list[TreeHead], list[str]]:
    """The tree heads whose signature verifies with one of `verifiers`, and a problem for
    each file that does not."""
    heads, problems = [], []
    for file in files:
        note = file.read_text()
        errors = []
        for verifier in verifiers:
            try:
                heads.append(open_checkpoint(note, verifier))
                break
            except NoteError as error:
                errors.append(str(error))
        else:
            problems.append(f"{file}: signature does not verify ({'; '.join(errors)})")
    return heads, problems


async def audit_database(dsn: str, heads: list[TreeHead], on_progress: Progress) -> AuditReport:
    audit = LogAudit(heads)
    connection = await asyncpg.connect(dsn)
    try:
        at = Checkpoint()
        while rows := await read_all_on(connection, at, PAGE):
            for row in rows:
                audit.add(record_of(row))
            at = Checkpoint(rows[-1]["transaction_id"], rows[-1]["position"])
            on_progress(audit.report.events)
        stored = [
            StoredLeaf(r["leaf_index"], r["position"], r["stream_id"], r["version"], r["hash"])
            for r in await connection.fetch(
                "SELECT leaf_index, position, stream_id, version, event_hash AS hash"
                " FROM log_leaves ORDER BY leaf_index"
            )
        ]
    finally:
        await connection.close()
    return audit.finish(stored)


async def _pages(http: httpx.AsyncClient, path: str) -> AsyncIterator[list[dict[str, Any]]]:
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        response = await http.get(path, params=params)
        response.raise_for_status()
        page = response.json()
        yield page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return


def _event(item: dict[str, Any]) -> RecordedEvent:
    prev = item["prev_hash"]
    return RecordedEvent(
        position=int(item["position"]),
        stream_id=UUID(item["stream_id"]),
        version=int(item["version"]),
        event_id=UUID(item["event_id"]),
        type=item["type"],
        schema_version=int(item["schema_version"]),
        data=item["data"],
        metadata=item["metadata"],
        occurred_at=datetime.fromisoformat(item["occurred_at"]),
        recorded_at=datetime.fromisoformat(item["recorded_at"]),
        transaction_id=0,
        prev_hash=bytes.fromhex(prev) if prev else None,
        hash=bytes.fromhex(item["hash"]),
    )


async def audit_http(
    http: httpx.AsyncClient, heads: list[TreeHead], on_progress: Progress
) -> AuditReport:
    audit = LogAudit(heads)
    async for items in _pages(http, "/v1/log/entries"):
        for item in items:
            audit.add(_event(item))
        on_progress(audit.report.events)
    stored: list[StoredLeaf] = []
    async for items in _pages(http, "/v1/log/leaves"):
        stored += [
            StoredLeaf(
                int(i["leaf_index"]),
                int(i["position"]),
                UUID(i["stream_id"]),
                int(i["version"]),
                bytes.fromhex(i["event_hash"]),
            )
            for i in items
        ]
    return audit.finish(stored)
