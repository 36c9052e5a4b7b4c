"""A process's cache of deal heads, so a command is one INSERT after a known version."""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

from app.domain.state import DealState


class HeadCache:
    """Each recently commanded deal's state and last hash, at the version they hold (LRU).

    A command decides on the cached state and appends right after its version; if another
    process moved the deal meanwhile, the (stream, version) key refuses the insert and the
    deal is read again. A refusal or no-op decided on a cached state is checked on a fresh
    read too, so a stale cache can cost a retry but never change an answer.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._heads: OrderedDict[UUID, tuple[DealState, bytes | None]] = OrderedDict()

    def get(self, deal_id: UUID) -> tuple[DealState, bytes | None] | None:
        head = self._heads.get(deal_id)
        if head is not None:
            self._heads.move_to_end(deal_id)
        return head

    def put(self, deal_id: UUID, state: DealState, head_hash: bytes | None) -> None:
        if not state.exists:
            return  # "no such deal" is always asked of the log: another process may open it
        current = self._heads.get(deal_id)
        if current is not None and current[0].version > state.version:
            return  # a concurrent command already cached a later version
        self._heads[deal_id] = (state, head_hash)
        self._heads.move_to_end(deal_id)
        while len(self._heads) > self.size:
            self._heads.popitem(last=False)

    def forget(self, deal_id: UUID) -> None:
        self._heads.pop(deal_id, None)
