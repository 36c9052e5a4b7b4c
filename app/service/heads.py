"""A process's cache of deal heads, so a command is one INSERT after a known version."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from uuid import UUID

from app.domain.events import parse_event
from app.domain.pipeline import Catalog
from app.domain.state import DealState, Recorded, fold, pipelines_named
from app.events.announce import Announced

log = logging.getLogger("dealledger.heads")

Head = tuple[DealState, bytes | None]


class HeadCache:
    """Each recently commanded deal's state and last hash, at the version they hold (LRU).

    A command decides on the cached state and appends right after its version; if another
    process moved the deal meanwhile, the (stream, version) key refuses the insert and the
    deal is read again. A refusal or no-op decided on a cached state is checked on a fresh
    read too, so a stale cache can cost a retry but never change an answer.

    Appends announce the heads they reached and the events that took them there (`heard`,
    from every process's NOTIFY): a cached head those events follow on from is folded on, so
    the next command on the deal needs no read. A head known to be behind (events missed or
    not announced) is not offered by `get` but by `behind`, to read on from. With N processes
    most commands land where another one appended; a doomed insert, its rollback and the
    read of what it missed cost twice the database work of reading on first.
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

    def heard(self, announced: Iterable[Announced], catalog: Catalog) -> None:
        """Appends (this process's or another's) committed: fold what they announced onto
        the cached heads they follow on from; mark the others as behind."""
        for item in announced:
            current = self._heads.get(item.stream_id)
            if current is None or current[0].version >= item.version:
                continue  # not cached, or this process's own append
            state = _folded(current[0], item, catalog)
            if state is None:
                self.moved([(item.stream_id, item.version)])
            else:
                self.put(item.stream_id, state, item.head_hash)

    def moved(self, heads: Iterable[tuple[UUID, int]]) -> None:
        """Appends reached these versions (this process's or another's)."""
        for deal_id, version in heads:
            current = self._heads.get(deal_id)
            if current is not None and current[0].version < version:
                self._moved[deal_id] = max(version, self._moved.get(deal_id, 0))

    def forget(self, deal_id: UUID) -> None:
        self._heads.pop(deal_id, None)
        self._moved.pop(deal_id, None)


def _folded(state: DealState, item: Announced, catalog: Catalog) -> DealState | None:
    """`state` with the announced events after its version folded on; None when they do not
    follow on from it, name a pipeline version not in `catalog`, or cannot be read."""
    try:
        events = item.events()
        if not events or events[0].version > state.version + 1:
            return None
        history = [
            Recorded(
                parse_event(e.type, e.schema_version, e.data),
                e.version,
                e.occurred_at,
                e.recorded_at,
            )
            for e in events
            if e.version > state.version
        ]
        if not all(catalog.has(*version) for version in pipelines_named(history, [state])):
            return None
        return fold(state.deal_id, history, state, catalog)
    except Exception as error:  # unreadable here (e.g. from a newer release): read on instead
        log.debug("cannot fold an announced append: %s", error)
        return None
