"""One deal's integrity: its hash chain, and its events against the signed log.

A chain alone proves little: whoever can write the table can recompute it. So each event the
sequencer placed in the Merkle tree is also checked against it: still there (a deal whose
last events vanish is caught), still the event sequenced, and included, by an audit path
from the stored subtrees, in the latest checkpoint this service's key signed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from app.events import merkle
from app.events.hashing import expected_hash
from app.events.log import RecordedEvent
from app.events.notes import NoteError, Verifier, open_checkpoint
from app.events.store import Break, EventStore
from app.projections.log_tree import computed


@dataclass(frozen=True)
class SignedHead:
    tree_size: int
    root: bytes


@dataclass
class DealIntegrity:
    events: list[RecordedEvent]
    breaks: list[Break] = field(default_factory=list)
    leaf_indexes: dict[int, int] = field(default_factory=dict)
    """version -> leaf index, for events the sequencer has placed."""
    checkpoint: SignedHead | None = None
    covered: int = 0
    """Events of the deal proven included in `checkpoint`."""

    @property
    def valid(self) -> bool:
        return not self.breaks

    @property
    def broken_versions(self) -> set[int]:
        return {b.version for b in self.breaks}


async def latest_signed(connection: asyncpg.Connection, verifier: Verifier) -> SignedHead | None:
    """The newest checkpoint whose signature verifies with this service's key."""
    rows = await connection.fetch(
        "SELECT note FROM log_checkpoints WHERE verifier_key = $1 ORDER BY tree_size DESC LIMIT 5",
        verifier.encode(),
    )
    for row in rows:
        try:
            head = open_checkpoint(row["note"], verifier)
        except NoteError:
            continue  # a forged row: look further back
        return SignedHead(head.size, head.root)
    return None


async def check_deal(
    store: EventStore, connection: asyncpg.Connection, deal_id: UUID, verifier: Verifier
) -> DealIntegrity:
    result = DealIntegrity(await store.read_stream(deal_id))
    verdict = await store.verify(deal_id)
    result.breaks.extend(verdict.breaks)
    by_version = {e.version: e for e in result.events}
    leaves = await connection.fetch(
        "SELECT leaf_index, version, event_hash FROM log_leaves WHERE stream_id = $1"
        " ORDER BY version",
        deal_id,
    )
    head = await latest_signed(connection, verifier)
    result.checkpoint = head
    to_prove: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        version, index = leaf["version"], leaf["leaf_index"]
        event = by_version.get(version)
        if event is None:
            result.breaks.append(
                Break(deal_id, version, f"sequenced as leaf {index} but no longer in the log")
            )
            continue
        result.leaf_indexes[version] = index
        if leaf["event_hash"] != event.hash:
            result.breaks.append(
                Break(deal_id, version, f"differs from the event sequenced as leaf {index}")
            )
        if head is not None and index < head.tree_size:
            to_prove.append((version, index, expected_hash(event, event.prev_hash)))
    if head is not None and to_prove:
        size = head.tree_size
        try:
            paths = await computed(
                connection,
                lambda get: [merkle.inclusion_path(i, size, get) for _, i, _ in to_prove],
            )
        except LookupError as missing:
            result.breaks.append(Break(deal_id, to_prove[-1][0], f"the stored tree: {missing}"))
            paths = []
        for (version, index, digest), path in zip(to_prove, paths, strict=False):
            if merkle.verify_inclusion(index, size, merkle.leaf_hash(digest), path, head.root):
                result.covered += 1
            else:
                result.breaks.append(
                    Break(deal_id, version, f"leaf {index} is not in the checkpoint of {size}")
                )
    result.breaks.sort(key=lambda b: b.version)
    return result
