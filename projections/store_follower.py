"""Feeds the access index from the event store's notification log, by position.

SQLite has no push subscription, so the follower reads the log from the index's position on:
once to catch up on start, then on demand or on a polling thread. It only applies events to
the index; what reacts to them (the embedded kill switch) subscribes to the index. The polling
thread also tells the index, each interval, that time has passed (`AccessIndex.tick`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification

from projections.access_index import AccessIndex
from projections.event_pages import PageDecoder, read_rows
from projections.gc_pause import gc_paused

Progress = Callable[[int, int], None]
"""Called with (position reached, last position in the store) while catching up."""


class StoreFollower:
    """Reads notifications after the index's position and applies them in order."""

    def __init__(
        self,
        app: Application[UUID],
        index: AccessIndex,
        page_size: int = 20_000,
    ) -> None:
        self.app = app
        self.index = index
        self.page_size = page_size
        """Events read and decoded at a time (a page of 20k takes a few MB)."""
        self.decoder = PageDecoder(app)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._catching_up = threading.Lock()
        """One catch-up at a time: the polling thread and on-demand callers would otherwise
        both read the page after the same position and apply it twice."""

    def catch_up(self, until: int | None = None, progress: Progress | None = None) -> int:
        """Applies every stored event up to `until` (default: the end); returns the position.

        A long catch-up builds millions of long-lived objects, on which Python's cyclic garbage
        collector would spend most of the time; it is paused meanwhile and what was built is
        then frozen out of its reach (none of it is cyclic garbage)."""
        with self._catching_up:
            backlog = (self.app.recorder.max_notification_id() or 0) - self.index.position
            bulk = gc_paused(freeze=True) if backlog > self.page_size else nullcontext()
            with bulk:
                return self._catch_up(until, progress)

    def _catch_up(self, until: int | None, progress: Progress | None) -> int:
        recorder = self.app.recorder
        index = self.index
        last = recorder.max_notification_id() or 0
        if until is not None:
            last = min(last, until)
        while index.position < last:
            rows = read_rows(self.app, index.position, self.page_size, stop=last)
            if not rows:
                break
            index.apply_all(self.decoder.decode(rows))
            if progress is not None:
                progress(index.position, last)
        return index.position

    def _apply(self, page: Sequence[Notification]) -> None:
        """Applies notifications that follow the index's position, in order; the caller holds
        `_catching_up`. Shared with followers that are pushed notifications rather than polling
        for them."""
        self.index.apply_all(self.decoder.decode(
            [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in page]))

    def follow(self, interval: float = 0.05) -> None:
        """Starts a daemon thread that keeps catching up until `stop()`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True,
                                        name="interlock-store-follower")
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            self.catch_up()
            with self._catching_up:
                self.index.tick()
