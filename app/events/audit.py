"""The auditor's check of the whole log against checkpoints it kept. Pure: fed events and the
sequencer's leaf table by whoever reads them (the database or the HTTP API), it trusts none
of it: each event's hash is recomputed from its content and chain, the tree is recomputed
from those, and only the signed checkpoints are taken as true.

Where a root differs, the sequencer's stored leaves say which leaf: they are used only when
they reproduce the signed root themselves (then they are exactly what was signed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from app.events import merkle
from app.events.hashing import expected_hash
from app.events.log import RecordedEvent
from app.events.notes import TreeHead


@dataclass(frozen=True)
class StoredLeaf:
    """A row of the sequencer's leaf table: which event it placed at `index`."""

    index: int
    position: int
    stream_id: UUID
    version: int
    event_hash: bytes


@dataclass(frozen=True)
class Finding:
    kind: str
    """chain | truncated | root_mismatch | altered | missing | moved"""
    message: str
    checkpoint: int | None = None
    leaf_index: int | None = None
    position: int | None = None
    stream_id: UUID | None = None
    version: int | None = None

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["stream_id"] = str(self.stream_id) if self.stream_id else None
        return found


@dataclass
class AuditReport:
    events: int = 0
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "findings": [f.as_json() for f in self.findings],
        }


class LogAudit:
    """Feed `add` every event in log order, then `finish` with the stored leaves."""

    MAX_FINDINGS = 1000

    def __init__(self, heads: list[TreeHead]) -> None:
        self.heads = sorted(heads, key=lambda h: h.size)
        self.report = AuditReport()
        self._frontier = merkle.Frontier()
        self._chains: dict[UUID, tuple[int, bytes]] = {}
        self._leaves: dict[int, tuple[int, bytes]] = {}
        """position -> (leaf index in the recomputed tree, recomputed event hash)"""
        self._roots: dict[int, bytes] = {}
        self._named: set[int] = set()
        self._sizes = {h.size for h in self.heads}

    def _find(self, finding: Finding) -> None:
        if len(self.report.findings) < self.MAX_FINDINGS:
            self.report.findings.append(finding)

    def add(self, event: RecordedEvent) -> None:
        # The leaf is the hash the event's own content gives (with the link it claims): an
        # edit shows there whatever was recomputed around it; the links are checked apart.
        digest = expected_hash(event, event.prev_hash)
        index = self._frontier.size
        previous = self._chains.get(event.stream_id)
        if digest != event.hash:
            problem = "its content does not match its hash: it was edited"
        elif event.prev_hash != (previous[1] if previous else None) or event.version != (
            previous[0] + 1 if previous else 1
        ):
            problem = "it does not follow the stream's previous event in the log"
        else:
            problem = None
        if problem is not None:
            self._find(
                Finding(
                    "chain",
                    f"stream {event.stream_id} version {event.version} (leaf {index}): {problem}",
                    leaf_index=index,
                    position=event.position,
                    stream_id=event.stream_id,
                    version=event.version,
                )
            )
        self._chains[event.stream_id] = (event.version, event.hash)
        self._leaves[event.position] = (index, digest)
        self._frontier.append(merkle.leaf_hash(digest))
        self.report.events += 1
        if self._frontier.size in self._sizes:
            self._roots[self._frontier.size] = self._frontier.root()

    def finish(self, stored: list[StoredLeaf]) -> AuditReport:
        """Judge every checkpoint; `stored`: the sequencer's leaves, in index order."""
        total, previous_ok = self._frontier.size, 0
        for head in self.heads:
            entry: dict[str, Any] = {"tree_size": head.size, "origin": head.origin}
            if head.size > total:
                status = "truncated"
                message = (
                    f"the log holds {total} events, fewer than the {head.size} of a"
                    " checkpoint it signed: events were removed"
                )
            elif self._roots[head.size] != head.root:
                status = "root_mismatch"
                message = (
                    f"the first {head.size} events do not hash to the root signed for them:"
                    " history was changed"
                )
            else:
                status, message, previous_ok = "ok", "", head.size
            entry["status"] = status
            if status != "ok":
                self._find(Finding(status, message, checkpoint=head.size))
                self._locate(head, stored, previous_ok)
            self.report.checkpoints.append(entry)
        return self.report

    def _locate(self, head: TreeHead, stored: list[StoredLeaf], previous_ok: int) -> None:
        """Name the leaves that differ from what `head` signed."""
        signed = stored[: head.size]
        authentic = (
            len(signed) == head.size
            and merkle.root([merkle.leaf_hash(leaf.event_hash) for leaf in signed]) == head.root
        )
        if not authentic:
            self._find(
                Finding(
                    "root_mismatch",
                    f"the sequencer's stored leaves do not reproduce checkpoint {head.size}"
                    f" either; the change lies among leaves {previous_ok}..{head.size - 1}",
                    checkpoint=head.size,
                )
            )
            return
        for leaf in signed[previous_ok:]:
            if leaf.index in self._named:
                continue
            now = self._leaves.get(leaf.position)
            named = f"leaf {leaf.index} (stream {leaf.stream_id} version {leaf.version})"
            if now is None:
                kind, message = "missing", f"{named} is no longer in the log"
            elif now[1] != leaf.event_hash:
                kind = "altered"
                message = f"{named} differs from the event signed: its content was changed"
            elif now[0] != leaf.index:
                kind, message = "moved", f"{named} now sits at leaf {now[0]}"
            else:
                continue
            self._named.add(leaf.index)
            where = (head.size, leaf.index, leaf.position, leaf.stream_id, leaf.version)
            self._find(Finding(kind, message, *where))
