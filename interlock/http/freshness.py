"""How far the access index lags the event store, without asking the store per decision.

A refresher thread reads the store's last position every refresh interval and remembers when
each new position was first seen. The lag in seconds is how long the oldest stored event the
index has not applied has been visible in the store, so it is accurate to one refresh
interval, and a bulk load that the follower absorbs within the bound never counts as stale.
If the store cannot be read for longer than the bound, the replica cannot know that it is
current, and counts as stale too: it fails closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from projections.access_index import AccessIndex

log = logging.getLogger("interlock.http")


@dataclass(frozen=True, slots=True)
class Lag:
    index_position: int
    store_position: int
    positions: int
    seconds: float
    store_checked_seconds_ago: float


class Freshness:
    """The index's lag behind the store, and whether it exceeds `max_lag_seconds`."""

    def __init__(
        self,
        index: AccessIndex,
        store_position: Callable[[], int],
        max_lag_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index = index
        self._read_store_position = store_position
        self.max_lag_seconds = max_lag_seconds
        self._clock = clock
        self.store_position = index.position
        self.checked_at = clock()
        self._first_seen: tuple[tuple[int, float], ...] = ()
        """(store position, when first seen) for positions beyond the index, oldest first;
        replaced, never mutated, so readers on other threads need no lock."""

    def refresh(self) -> None:
        """Reads the store's last position; a failure leaves `checked_at` to age."""
        try:
            position = self._read_store_position()
        except Exception:
            log.exception("cannot read the store's position")
            return
        now = self._clock()
        index_position = self._index.position
        seen = tuple(entry for entry in self._first_seen if entry[0] > index_position)
        if position > self.store_position:
            self.store_position = position
            if position > index_position:
                seen = (*seen, (position, now))
        self._first_seen = seen
        self.checked_at = now

    def lag(self) -> Lag:
        now = self._clock()
        index_position = self._index.position
        seconds = 0.0
        for position, seen_at in self._first_seen:
            if position > index_position:
                seconds = now - seen_at
                break
        return Lag(
            index_position,
            self.store_position,
            max(0, self.store_position - index_position),
            seconds,
            now - self.checked_at,
        )

    def stale(self) -> bool:
        """True when decisions must not be answered from the index for directive-scoped models.

        Called on every decision: reads two attributes and walks a tuple that is empty in the
        steady state."""
        now = self._clock()
        if now - self.checked_at > self.max_lag_seconds:
            return True
        index_position = self._index.position
        if index_position >= self.store_position:
            return False
        for position, seen_at in self._first_seen:
            if position > index_position:
                return now - seen_at > self.max_lag_seconds
        return False


class Refresher:
    """A daemon thread that calls `tick` every `interval` seconds until stopped."""

    def __init__(self, tick: Callable[[], None], interval: float) -> None:
        self._tick = tick
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="interlock-store-refresher")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._tick()
