"""Feeds the access index from a PostgreSQL event store, pushed by LISTEN/NOTIFY.

Every transaction that stores events also sends a NOTIFY; eventsourcing's subscription
(`recorder.subscribe(gt=position)`) listens on one pooled connection and reads what follows the
last notification it delivered. That is fast, but a notification can be lost (the listening
connection dies, a network path silently drops, a writer commits without NOTIFY), and then the
subscription waits forever while decisions age. So a watchdog compares the index's position
with the store's `max_notification_id()` every `check_interval`; a gap still open after
`max_lag` seconds is closed by polling (the `StoreFollower` catch-up) and the subscription is
started anew from the index's position. A subscription that fails outright (its connection
terminated) is replaced at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification, Subscription
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresSubscription
from psycopg.sql import SQL, Identifier

from projections.access_index import AccessIndex
from projections.store_follower import StoreFollower

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.2
"""Pause before re-subscribing after a failed subscription, so a down server is not hammered."""


class ListeningSubscription(PostgresSubscription):
    """eventsourcing's subscription, but its listening connection is closed when it ends, not
    given back to the pool: a pooled connection left listening would queue every later
    notification in memory for as long as it lives (an hour by default). Closing rather than
    UNLISTEN also never waits on a connection that died silently. Written against
    eventsourcing 9.5's `PostgresSubscription._listen`; tests/postgres/test_follower.py checks
    the effect."""

    def _listen(self) -> None:
        recorder = self._recorder
        try:
            with recorder.datastore.get_connection() as conn:
                conn.execute(SQL("LISTEN {0}").format(Identifier(recorder.channel_name)))
                try:
                    while not self._has_been_stopped and not self._thread_error:
                        for _ in conn.notifies(timeout=0.1, stop_after=1):
                            self._has_been_notified.set()
                finally:
                    with contextlib.suppress(Exception):
                        conn.close()  # the pool replaces a closed connection
        except BaseException as error:
            if self._thread_error is None:
                self._thread_error = error
            self.stop()


def subscribe(app: Application[UUID], gt: int) -> Subscription[object]:
    """A subscription to the store's events after position `gt`."""
    recorder = app.recorder
    if isinstance(recorder, PostgresApplicationRecorder):
        return ListeningSubscription(recorder, gt=gt)
    return recorder.subscribe(gt=gt)  # type: ignore[attr-defined, no-any-return]


class SubscriptionFollower(StoreFollower):
    """A `StoreFollower` whose `follow()` listens for new events instead of polling for them.

    `catch_up()` still polls: the first catch-up, read-your-writes waits and the watchdog's
    recovery all read the log by position, under the same lock as the subscription, and
    notifications at or below the index's position are skipped, so each event is applied once.
    """

    def __init__(
        self,
        app: Application[UUID],
        index: AccessIndex,
        page_size: int = 5000,
        max_lag: float = 1.0,
        check_interval: float = 0.25,
    ) -> None:
        super().__init__(app, index, page_size)
        self.max_lag = max_lag
        """Seconds the index may stay behind a position the store had reached before the
        watchdog stops trusting the subscription."""
        self.check_interval = check_interval
        self.recoveries = 0
        """How often the watchdog had to catch up by polling (a lost notification)."""
        self.subscriptions = 0
        """How many subscriptions have been started (1 while nothing went wrong)."""
        self._subscription: Subscription[object] | None = None
        self._subscription_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def follow(self, interval: float = 0.05) -> None:
        """Starts the listening thread and the watchdog (which also tells the index
        every `interval` seconds that time has passed) until `stop()`."""
        if self._threads:
            return
        self._threads = [
            threading.Thread(target=self._listen, daemon=True, name="interlock-pg-listener"),
            threading.Thread(target=self._watch, args=(interval,), daemon=True,
                             name="interlock-pg-watchdog"),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.resubscribe()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def resubscribe(self) -> None:
        """Ends the current subscription; the listening thread starts a new one from the
        index's position (unless stopping)."""
        with self._subscription_lock:
            subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.stop()

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._subscription_lock:
                    if self._stopping.is_set():
                        return
                    subscription = subscribe(self.app, self.index.position)
                    self._subscription = subscription
                    self.subscriptions += 1
                with subscription:
                    for notification in subscription:
                        self._take(notification)
            except Exception as error:  # the listening connection died, the server went away
                log.warning("store subscription failed (%s: %s); subscribing again",
                            type(error).__name__, error)
                self._stopping.wait(RETRY_SECONDS)

    def _take(self, notification: Notification) -> None:
        with self._catching_up:
            if notification.id > self.index.position:
                self._apply([notification])

    def _watch(self, interval: float) -> None:
        behind: tuple[float, int] | None = None
        """(when the index was first seen behind, the store's position then)."""
        next_check = 0.0
        while not self._stopping.wait(min(interval, self.check_interval)):
            with self._catching_up:  # the listener feeds the same index
                self.index.tick()
            now = time.monotonic()
            if now < next_check:
                continue
            next_check = now + self.check_interval
            try:
                behind = self._check_lag(behind, now)
            except Exception as error:  # the store is unreachable: the subscription says so too
                log.warning("lag check failed (%s: %s)", type(error).__name__, error)

    def _check_lag(self, behind: tuple[float, int] | None, now: float) -> tuple[float, int] | None:
        """The watchdog's step: notices a gap that outlives `max_lag` and closes it."""
        position = self.index.position
        if behind is not None and position >= behind[1]:
            behind = None
        head = self.app.recorder.max_notification_id() or 0
        if position >= head:
            return None
        if behind is None:
            return (now, head)
        if now - behind[0] < self.max_lag:
            return behind
        self.recoveries += 1
        log.warning("index at %d, store at %d for %.1f s: catching up by polling and "
                    "subscribing again", position, behind[1], now - behind[0])
        self.catch_up()
        self.resubscribe()
        return None
