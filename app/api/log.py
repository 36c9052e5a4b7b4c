"""The verifiable log over HTTP: signed checkpoints, the verifier key, Merkle proofs, and the
events in tree order for an auditor who recomputes everything (`dealledger audit --url`)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from app.api.auth import require
from app.api.deps import MAX_POSITION, READ, ConnectionDep, ServicesDep
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_bigint_cursor, encode_cursor
from app.api.schemas import StoredEventOut
from app.domain.errors import InvalidRequest, NotFound
from app.events import merkle
from app.events.log import Checkpoint
from app.events.store import read_all_on, record_of
from app.projections.log_tree import computed, tree_size

router = APIRouter(prefix="/v1/log", tags=["verifiable log"], dependencies=[READ])

TEXT: dict[int | str, dict[str, Any]] = {200: {"content": {"text/plain": {}}}}
NONE_YET: dict[int | str, dict[str, Any]] = {
    404: {"description": "Nothing signed or sequenced yet"}
}


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@router.get(
    "/public-key",
    summary="The checkpoint verifier key (C2SP signed-note form)",
    response_class=PlainTextResponse,
    responses=TEXT,
)
async def public_key(services: ServicesDep) -> PlainTextResponse:
    return PlainTextResponse(services.verifier.encode() + "\n")


@router.get(
    "/checkpoint",
    summary="The latest signed checkpoint (C2SP tlog-checkpoint note)",
    response_class=PlainTextResponse,
    responses={**TEXT, **NONE_YET},
)
async def latest_checkpoint(connection: ConnectionDep) -> PlainTextResponse:
    note = await connection.fetchval(
        "SELECT note FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1"
    )
    if note is None:
        raise NotFound("no checkpoint has been signed yet: the log is empty or just started")
    return PlainTextResponse(note)


class CheckpointOut(BaseModel):
    tree_size: int
    root_hash: str = Field(description="base64")
    signed_at: datetime
    verifier_key: str = Field(description="The key that signed it (old ones keep verifying)")
    note: str


class CheckpointPage(BaseModel):
    items: list[CheckpointOut]
    next_cursor: str | None


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


@router.get("/checkpoints", summary="Every signed checkpoint, newest first")
async def checkpoints(
    connection: ConnectionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
    min_size: Annotated[
        int, Query(ge=0, le=MAX_POSITION, description="Only checkpoints at least this big")
    ] = 0,
) -> CheckpointPage:
    after = decode_bigint_cursor(cursor, "s")
    rows = await connection.fetch(
        "SELECT tree_size, root_hash, signed_at, verifier_key, note FROM log_checkpoints"
        " WHERE tree_size >= $1 AND tree_size < $2 ORDER BY tree_size DESC LIMIT $3",
        min_size,
        after["s"] if after else 2**63 - 1,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return CheckpointPage(
        items=[
            CheckpointOut(
                tree_size=r["tree_size"],
                root_hash=b64(r["root_hash"]),
                signed_at=r["signed_at"],
                verifier_key=r["verifier_key"],
                note=r["note"],
            )
            for r in rows
        ],
        next_cursor=encode_cursor({"s": rows[-1]["tree_size"]}) if more else None,
    )


class InclusionProof(BaseModel):
    position: int
    leaf_index: int
    tree_size: int
    event_hash: str = Field(description="base64; the leaf is SHA-256(0x00 ‖ event hash)")
    hashes: list[str] = Field(description="The audit path, base64, leaf side first")


class ConsistencyProof(BaseModel):
    from_size: int = Field(serialization_alias="from")
    to_size: int = Field(serialization_alias="to")
    hashes: list[str]


async def _within_tree(connection: ConnectionDep, size: int | None) -> int:
    current = await tree_size(connection)
    if size is None:
        signed = await connection.fetchval("SELECT max(tree_size) FROM log_checkpoints")
        if signed is None:
            raise NotFound("no checkpoint has been signed yet: give tree_size")
        return int(signed)
    if size > current:
        raise InvalidRequest(f"tree_size {size} is beyond the tree's {current} leaves")
    return size


@router.get(
    "/proof/inclusion",
    summary="That an event is in the tree of a given size",
    responses=NONE_YET,
)
async def inclusion(
    connection: ConnectionDep,
    position: Annotated[int, Query(ge=1, le=MAX_POSITION, description="The event's position")],
    tree_size: Annotated[
        int | None,
        Query(ge=1, le=MAX_POSITION, description="Default: the latest checkpoint's size"),
    ] = None,
) -> InclusionProof:
    leaf = await connection.fetchrow(
        "SELECT leaf_index, event_hash FROM log_leaves WHERE position = $1", position
    )
    if leaf is None:
        raise NotFound(f"no event at position {position} is in the tree (yet)")
    size = await _within_tree(connection, tree_size)
    index = leaf["leaf_index"]
    if index >= size:
        raise InvalidRequest(f"the event is leaf {index}, not within a tree of {size} leaves")
    path = await computed(connection, lambda get: merkle.inclusion_path(index, size, get))
    return InclusionProof(
        position=position,
        leaf_index=index,
        tree_size=size,
        event_hash=b64(leaf["event_hash"]),
        hashes=[b64(h) for h in path],
    )


@router.get(
    "/proof/consistency",
    summary="That the tree of one size extends the other",
    responses=NONE_YET,
)
async def consistency(
    connection: ConnectionDep,
    from_size: Annotated[int, Query(alias="from", ge=1, le=MAX_POSITION)],
    to_size: Annotated[int, Query(alias="to", ge=1, le=MAX_POSITION)],
) -> ConsistencyProof:
    if from_size > to_size:
        raise InvalidRequest(f"from ({from_size}) must not exceed to ({to_size})")
    size = await _within_tree(connection, to_size)
    path = await computed(connection, lambda get: merkle.consistency_path(from_size, size, get))
    return ConsistencyProof(from_size=from_size, to_size=size, hashes=[b64(h) for h in path])


class Entry(StoredEventOut):
    stream_id: UUID
    prev_hash: str | None = Field(description="hex")


class EntryPage(BaseModel):
    items: list[Entry]
    next_cursor: str | None


# The whole log in bulk: for the team's auditors, not every reader.
TEAM = [Depends(require("team"))]


@router.get(
    "/entries",
    summary="Every committed event in tree order, with what it hashes",
    dependencies=TEAM,
)
async def entries(
    connection: ConnectionDep, limit: Limit = DEFAULT_LIMIT, cursor: str | None = None
) -> EntryPage:
    after = decode_bigint_cursor(cursor, "x", "p")
    at = Checkpoint(after["x"], after["p"]) if after else Checkpoint()
    rows = [record_of(r) for r in await read_all_on(connection, at, limit)]
    indexes = dict(
        await connection.fetch(
            "SELECT position, leaf_index FROM log_leaves WHERE position = ANY($1::bigint[])",
            [e.position for e in rows],
        )
    )
    return EntryPage(
        items=[
            Entry(
                **Entry.fields_of(e),
                leaf_index=indexes.get(e.position),
                stream_id=e.stream_id,
                prev_hash=e.prev_hash.hex() if e.prev_hash else None,
            )
            for e in rows
        ],
        next_cursor=(
            encode_cursor({"x": rows[-1].transaction_id, "p": rows[-1].position})
            if len(rows) == limit
            else None
        ),
    )


class Leaf(BaseModel):
    leaf_index: int
    position: int
    stream_id: UUID
    version: int
    event_hash: str = Field(description="hex; the leaf hash is SHA-256(0x00 ‖ event hash)")


class LeafPage(BaseModel):
    items: list[Leaf]
    next_cursor: str | None


@router.get(
    "/leaves",
    summary="The sequencer's leaves: which event sits at each index",
    dependencies=TEAM,
)
async def leaves(
    connection: ConnectionDep, limit: Limit = DEFAULT_LIMIT, cursor: str | None = None
) -> LeafPage:
    after = decode_bigint_cursor(cursor, "i")
    rows = await connection.fetch(
        "SELECT leaf_index, position, stream_id, version, event_hash FROM log_leaves"
        " WHERE leaf_index > $1 ORDER BY leaf_index LIMIT $2",
        after["i"] if after else -1,
        limit,
    )
    return LeafPage(
        items=[
            Leaf(
                leaf_index=r["leaf_index"],
                position=r["position"],
                stream_id=r["stream_id"],
                version=r["version"],
                event_hash=r["event_hash"].hex(),
            )
            for r in rows
        ],
        next_cursor=encode_cursor({"i": rows[-1]["leaf_index"]}) if len(rows) == limit else None,
    )
