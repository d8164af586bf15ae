"""Feeds the access index from the event store's notification log, by position.

SQLite has no push subscription, so the follower reads the log from the index's position on:
once to catch up on start, then on demand or on a polling thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from uuid import UUID

from eventsourcing.application import Application

from projections.access_index import AccessIndex

Progress = Callable[[int, int], None]
"""Called with (position reached, last position in the store) while catching up."""


class StoreFollower:
    """Reads notifications after the index's position and applies them in order."""

    def __init__(self, app: Application[UUID], index: AccessIndex, page_size: int = 5000) -> None:
        self.app = app
        self.index = index
        self.page_size = page_size
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def catch_up(self, until: int | None = None, progress: Progress | None = None) -> int:
        """Applies every stored event up to `until` (default: the end); returns the position."""
        recorder = self.app.recorder
        to_domain_event = self.app.mapper.to_domain_event
        index = self.index
        last = recorder.max_notification_id() or 0
        if until is not None:
            last = min(last, until)
        while index.position < last:
            page = recorder.select_notifications(
                start=index.position, limit=self.page_size, stop=last, inclusive_of_start=False
            )
            if not page:
                break
            with index.lock:
                for notification in page:
                    index.apply(to_domain_event(notification), notification.id)
            if progress is not None:
                progress(index.position, last)
        return index.position

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
