"""A process's cache of deal heads, so a command is one INSERT after a known version."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from uuid import UUID

from app.domain.state import DealState

Head = tuple[DealState, bytes | None]


class HeadCache:
    """Each recently commanded deal's state and last hash, at the version they hold (LRU).

    A command decides on the cached state and appends right after its version; if another
    process moved the deal meanwhile, the (stream, version) key refuses the insert and the
    deal is read again. A refusal or no-op decided on a cached state is checked on a fresh
    read too, so a stale cache can cost a retry but never change an answer.

    Appends announce the heads they reached (`moved`, from every process's NOTIFY): a head
    known to be behind is not offered by `get` but by `behind`, to read on from. With N
    processes most commands land where another one appended; a doomed insert, its rollback
    and the read of what it missed cost twice the database work of reading on first.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._heads: OrderedDict[UUID, Head] = OrderedDict()
        self._moved: dict[UUID, int] = {}  # cached deals some append took past their head

    def get(self, deal_id: UUID) -> Head | None:
        """The head to decide on, unless the deal is known to have moved on since."""
        head = self._heads.get(deal_id)
        if head is None or deal_id in self._moved:
            return None
        self._heads.move_to_end(deal_id)
        return head

    def behind(self, deal_id: UUID) -> Head | None:
        """The cached head of a deal known to have moved on: where to read on from."""
        return self._heads.get(deal_id) if deal_id in self._moved else None

    def put(self, deal_id: UUID, state: DealState, head_hash: bytes | None) -> None:
        if not state.exists:
            return  # "no such deal" is always asked of the log: another process may open it
        current = self._heads.get(deal_id)
        if current is not None and current[0].version > state.version:
            return  # a concurrent command already cached a later version
        self._heads[deal_id] = (state, head_hash)
        self._heads.move_to_end(deal_id)
        if self._moved.get(deal_id, 0) <= state.version:
            self._moved.pop(deal_id, None)
        while len(self._heads) > self.size:
            evicted, _ = self._heads.popitem(last=False)
            self._moved.pop(evicted, None)

    def moved(self, heads: Iterable[tuple[UUID, int]]) -> None:
        """Appends reached these versions (this process's or another's)."""
        for deal_id, version in heads:
            current = self._heads.get(deal_id)
            if current is not None and current[0].version < version:
                self._moved[deal_id] = max(version, self._moved.get(deal_id, 0))

    def forget(self, deal_id: UUID) -> None:
        self._heads.pop(deal_id, None)
        self._moved.pop(deal_id, None)
