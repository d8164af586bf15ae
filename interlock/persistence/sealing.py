"""What both chained recorders do in the writer's transaction: check the chain's head and
seal the new events (see projections/audit.py for the chain)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from projections.chain import (
    GENESIS,
    PAGE,
    ChainRefused,
    chain_link,
    event_digest,
    stored_digest,
)

_Unsealed = tuple[int, UUID | str, int, bytes]
"""(position, originator id, originator version, digest) of an event not yet chained."""


def _extend(head: tuple[int, bytes], unsealed: Sequence[_Unsealed]) -> list[
    tuple[int, bytes, bytes]
]:
    """Chain rows for events after `head`, in position order."""
    link = head[1]
    rows = []
    for at, originator_id, version, digest in unsealed:
        link = chain_link(link, at, originator_id, version, digest)
        rows.append((at, digest, link))
    return rows


def _unsealed(ids: Sequence[int], stored_events: Sequence[StoredEvent]) -> list[_Unsealed]:
    return [(at, e.originator_id, e.originator_version, stored_digest(e))
            for at, e in zip(ids, stored_events, strict=True)]


class ChainSealing:
    """What both chained recorders do in the writer's transaction, under the store's write
    lock: check that the chain's head still verifies and that nothing was stored after it,
    then seal the new events. The backends supply the queries."""

    chain_table_name: str
    _session: threading.local

    def _chain_exists(self, c: Any) -> bool:
        raise NotImplementedError

    def _create_chain(self, c: Any) -> None:
        raise NotImplementedError

    def _last_links(self, c: Any) -> list[tuple[int, bytes, bytes]]:
        """The chain's last two rows (position, digest, link), the head first."""
        raise NotImplementedError

    def _first_event(self, c: Any, after: int, before: int | None) -> int | None:
        """The first stored position in (after, before)."""
        raise NotImplementedError

    def _events_between(self, c: Any, after: int, before: int | None,
                        limit: int) -> list[tuple[int, UUID | str, int, str, bytes]]:
        """(position, originator id, version, topic, state) of stored events in (after,
        before), in position order."""
        raise NotImplementedError

    def _insert_links(self, c: Any, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        raise NotImplementedError

    def _session_cursor(self) -> Any:
        return getattr(self._session, "cursor", None)

    def _verified_head(self, c: Any, before: int | None) -> tuple[int, bytes]:
        """The chain's head, once its link verifies and no event is stored between it and
        `before` (None: none after it at all); else ChainRefused."""
        if not self._chain_exists(c):
            first = self._first_event(c, 0, before)
            if first is not None:
                raise ChainRefused(first, "unchained",
                                   f"this store has no hash chain table ({self.chain_table_name})"
                                   ": its events are not sealed, and a writer will not seal them "
                                   "(`interlock verify`, then `interlock seal` to vouch for them)")
            self._create_chain(c)
        head = self._head(c, before)
        first = self._first_event(c, head[0], before)
        if first is not None:
            why = (f"stored after the chain's head (position {head[0]}) without a link" if head[0]
                   else "not sealed, and the chain holds no link (a store that never kept one, or "
                   "whose chain was emptied or dropped)")
            raise ChainRefused(first, "unchained",
                               f"{why}: a writer will not seal it (`interlock verify`, then "
                               "`interlock seal` to vouch for it)")
        return head

    def _head(self, c: Any, before: int | None = None) -> tuple[int, bytes]:
        """The chain's last position and link, once it is before `before`, the event there is
        the one chained and the link follows from the one before it; (0, GENESIS) for an empty
        chain."""
        last = self._last_links(c)
        if not last:
            return 0, GENESIS
        position, digest, link = last[0]
        if before is not None and position >= before:
            raise ChainRefused(before, "removed",
                               f"the chain already holds positions up to {position}, but the "
                               f"store gave this write position {before}: chained events were "
                               "removed")
        previous = last[1][2] if len(last) > 1 else GENESIS
        found = self._events_between(c, position - 1, position + 1, 1)
        if not found:
            raise ChainRefused(position, "removed",
                               "the event chained at the chain's head is missing from the store")
        _, originator_id, version, topic, state = found[0]
        if event_digest(topic, state) != digest:
            raise ChainRefused(position, "altered",
                               "the stored bytes of the chain's head event differ from those "
                               "chained")
        if chain_link(previous, position, originator_id, version, digest) != link:
            raise ChainRefused(position, "altered",
                               "the chain's head link does not follow from the link before it")
        return position, link

    def _seal(self, c: Any, ids: Sequence[int], stored_events: Sequence[StoredEvent]) -> None:
        """Links the events just inserted at `ids`, in the same transaction."""
        head = self._verified_head(c, ids[0])
        self._insert_links(c, _extend(head, _unsealed(ids, stored_events)))

    def seal_unsealed(self) -> tuple[int, int, int]:
        """Seals every event stored after the chain's head (all of them in a store without a
        chain), once the head itself verifies: the operator's explicit act after checking those
        events (`interlock seal`), never a writer's. Returns (first, last, count) sealed."""
        with self._writing() as c:
            if not self._chain_exists(c):
                self._create_chain(c)
            head = self._head(c)
            first = count = 0
            while page := self._events_between(c, head[0], None, PAGE):
                rows = _extend(head, [(at, o, v, event_digest(t, s)) for at, o, v, t, s in page])
                self._insert_links(c, rows)
                first, count = first or rows[0][0], count + len(rows)
                head = (rows[-1][0], rows[-1][2])
            return first, head[0], count

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Holds the store's write lock in one transaction from here to the end of the block,
        which this thread's writes join: committed at the end, rolled back on an error. Within
        it, what the caller reads (aggregates, the clock) cannot be overtaken by another writer
        before the commit. A log that a writer would refuse to chain onto (`_verified_head`)
        is refused here already."""
        if self._session_cursor() is not None or not self._can_hold_lock():
            yield
            return
        with self._locked() as cursor:
            self._verified_head(cursor, None)  # refused before the caller reads anything
            self._session.cursor = cursor
            try:
                yield
            finally:
                self._session.cursor = None

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """The held write transaction's cursor, or a locked transaction for one write."""
        held = self._session_cursor()
        if held is not None:
            yield held
            return
        with self._locked() as cursor:
            yield cursor

    def _locked(self) -> AbstractContextManager[Any]:
        """A new transaction that has taken the store's write lock; yields its cursor."""
        raise NotImplementedError

    def _can_hold_lock(self) -> bool:
        return True
