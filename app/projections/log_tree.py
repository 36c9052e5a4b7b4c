"""The sequencer: a log-wide RFC 9162 Merkle tree over the events, and signed checkpoints.

It follows the log like any projection (gap-safe order, checkpoint in the batch's own
transaction, rebuildable), giving each event the next leaf index; the leaf is the event's
hash, so a future erasure of an event's data can keep the tree. Every complete subtree is
stored, so an append and a proof read O(log n) rows. Each `every_events` events or
`every_seconds` it signs a C2SP checkpoint of the tree with an Ed25519 key that lives
outside the database, after checking the tree still agrees with the last one it signed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import asyncpg

from app.events import merkle
from app.events.notes import NoteError, Signer, TreeHead
from app.projections.runner import Envelope
from app.settings import Settings

NAME = "log_tree"
KEY_FILE = "log-signing-key"
T = TypeVar("T")


class LogInconsistent(Exception):
    """The tree no longer agrees with a checkpoint already signed: history was changed (or
    cut short) since. Nothing more is signed until an operator looks."""


async def fetch_nodes(
    connection: asyncpg.Connection, keys: Collection[tuple[int, int]]
) -> merkle.NodeGetter:
    heights, indexes = zip(*keys, strict=True) if keys else ((), ())
    rows = await connection.fetch(
        "SELECT n.height, n.index, n.hash FROM unnest($1::smallint[], $2::bigint[])"
        " AS k(height, index) JOIN log_nodes n USING (height, index)",
        list(heights),
        list(indexes),
    )
    return merkle.getter((r["height"], r["index"], r["hash"]) for r in rows)


async def computed(connection: asyncpg.Connection, compute: Callable[[merkle.NodeGetter], T]) -> T:
    """Run a tree computation on the stored subtrees it needs, fetched in one query."""
    return compute(await fetch_nodes(connection, merkle.needed(compute)))


async def tree_size(connection: asyncpg.Connection) -> int:
    size = await connection.fetchval("SELECT max(leaf_index) + 1 FROM log_leaves")
    return int(size or 0)


async def root_at(connection: asyncpg.Connection, size: int) -> bytes:
    return await computed(connection, lambda get: merkle.tree_root(size, get))


class LogTree:
    name = NAME
    tables: tuple[str, ...] = ("log_leaves", "log_nodes")
    every_stream = True  # pipeline streams too: the tree covers the whole log

    def __init__(
        self,
        signer: Signer | None = None,
        *,
        origin: str = "dealledger.local/log",
        every_events: int = 1000,
        every_seconds: float = 60.0,
        gather_seconds: float = 0.1,
    ) -> None:
        self.signer = signer
        self.origin = origin
        self.every_events = every_events
        self.tick_seconds = every_seconds
        self.gather_seconds = gather_seconds
        # What the last committed-or-not batch left: trusted only while the stored tree has
        # the same size (a rolled-back batch or another process's work shows as a mismatch).
        self._frontier: merkle.Frontier | None = None
        self._last: _Signed | None = None

    async def _load(self, connection: asyncpg.Connection) -> merkle.Frontier:
        size = await tree_size(connection)
        if self._frontier is None or self._frontier.size != size:
            self._frontier = await computed(connection, lambda get: merkle.Frontier.of(size, get))
            row = await connection.fetchrow(
                "SELECT tree_size, root_hash, extract(epoch FROM now() - signed_at) AS age"
                " FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1"
            )
            self._last = (
                _Signed(row["tree_size"], row["root_hash"], time.monotonic() - float(row["age"]))
                if row
                else None
            )
        return merkle.Frontier(self._frontier.size, list(self._frontier.subtrees))

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        frontier = await self._load(connection)
        before = frontier.size
        leaves: list[list[object]] = [[], [], [], [], []]
        nodes: list[list[object]] = [[], [], []]
        for envelope in batch:
            digest = envelope.hash
            row = (frontier.size, envelope.position, envelope.stream_id, envelope.version, digest)
            for column, value in zip(leaves, row, strict=True):
                column.append(value)
            for node in frontier.append(merkle.leaf_hash(digest)):
                for column, value in zip(nodes, node, strict=True):
                    column.append(value)
        await connection.execute(_INSERT_SQL, *leaves, *nodes)  # one round trip
        self._frontier = frontier
        if self._last is not None and before < self._last.size:
            await self._check_crossed(connection, before, frontier.size)
        await self._sign_if_due(connection, frontier)

    async def tick(self, connection: asyncpg.Connection, now: datetime) -> None:
        """Sign the tree as it stands when `every_seconds` passed since the last checkpoint."""
        await self._sign_if_due(connection, await self._load(connection))

    async def _check_crossed(self, connection: asyncpg.Connection, before: int, after: int) -> None:
        """Replaying (a rebuild), the tree passes sizes signed before: it must match them."""
        signed = await connection.fetch(
            "SELECT tree_size, root_hash FROM log_checkpoints"
            " WHERE tree_size > $1 AND tree_size <= $2 ORDER BY tree_size",
            before,
            after,
        )
        for row in signed:
            await _agrees(connection, row["tree_size"], row["root_hash"])

    async def _sign_if_due(self, connection: asyncpg.Connection, frontier: merkle.Frontier) -> None:
        if self.signer is None or frontier.size == 0:
            return
        last = self._last
        if last is not None:
            if frontier.size <= last.size:
                return  # a rebuild still replaying what was signed
            due = (
                frontier.size - last.size >= self.every_events
                or time.monotonic() - last.signed_at >= self.tick_seconds
            )
            if not due:
                return
            await _agrees(connection, last.size, last.root)
        head = TreeHead(self.origin, frontier.size, frontier.root())
        await connection.execute(
            "INSERT INTO log_checkpoints (tree_size, root_hash, note, verifier_key)"
            " VALUES ($1, $2, $3, $4)",
            head.size,
            head.root,
            self.signer.sign(head.text()),
            self.signer.verifier.encode(),
        )
        self._last = _Signed(head.size, head.root, time.monotonic())


@dataclass(frozen=True)
class _Signed:
    size: int
    root: bytes
    signed_at: float
    """time.monotonic() of the signing"""


_INSERT_SQL = """
WITH leaves AS (
    INSERT INTO log_leaves (leaf_index, position, stream_id, version, event_hash)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::int[], $5::bytea[])
)
INSERT INTO log_nodes (height, index, hash)
SELECT * FROM unnest($6::smallint[], $7::bigint[], $8::bytea[])
"""


async def _agrees(connection: asyncpg.Connection, size: int, signed_root: bytes) -> None:
    if await root_at(connection, size) != signed_root:
        raise LogInconsistent(
            f"the tree of the first {size} events no longer has the root signed for it:"
            " events were changed or removed since (run `dealledger audit`)"
        )


def load_signer(settings: Settings) -> Signer:
    """DEALLEDGER_SIGNING_KEY, else the key file under the data directory, made on first
    start (mode 0600). Never the database: whoever can rewrite the log cannot sign."""
    if settings.signing_key is not None:
        return Signer.parse(settings.signing_key.get_secret_value())
    path = settings.data_dir / KEY_FILE
    try:
        return Signer.parse(path.read_text())
    except FileNotFoundError:
        pass
    signer = Signer.generate(settings.log_origin)
    _create_private(path, signer.encode() + "\n")
    return Signer.parse(path.read_text())  # another process may have made it first


def _create_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def log_tree_for(settings: Settings) -> LogTree:
    try:
        signer = load_signer(settings)
    except NoteError as error:
        raise NoteError(f"the log signing key is unusable: {error}") from error
    return LogTree(
        signer,
        origin=settings.log_origin,
        every_events=settings.checkpoint_every_events,
        every_seconds=settings.checkpoint_every_seconds,
    )
