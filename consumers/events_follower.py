"""Feeds an access index from `interlock.events` instead of the store: decision replicas.

Any number of replicas can follow the one events topic; each knows its position (the last
`position` header applied) and skips records at positions it has already applied, so the
relay's rare duplicate is harmless. An index started from a snapshot does not read the topic's
history at all: the first record after its position is found by bisecting the topic's offsets
(positions grow with offsets, see `consumers.kafka.seek_after`), a few fetches instead of
millions of records.

The replica's index has no subscriber: applying an order is the fact base's work and the
forgetting of cached verdicts, never a fan-out over the subjects it changes, so decisions
asked meanwhile wait for nothing more.
"""

from __future__ import annotations

import threading
import time

from kafka import TopicPartition

from consumers import kafka
from consumers.kafka import DEFAULT_TOPICS, Topics, header, seek_after
from projections.access_index import AccessIndex
from projections.gc_pause import gc_paused
from schemas.records import decode_event


class EventsFollower:
    """Applies the events topic to an index, from the beginning, then as records arrive."""

    def __init__(self, index: AccessIndex, bootstrap: str, topics: Topics = DEFAULT_TOPICS) -> None:
        self.index = index
        self.consumer = kafka.consumer(
            bootstrap, topics.name("replica"), group_id=None, enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.partition = TopicPartition(topics.events, 0)
        self.consumer.assign([self.partition])
        seek_after(self.consumer, self.partition, index.position)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self, timeout_ms: int = 200) -> int:
        """Applies what has arrived; returns how many records were read."""
        records = self.consumer.poll(timeout_ms, max_records=10_000).get(self.partition, [])
        index = self.index
        index.apply_all(
            (decode_event(record.value), position) for record, position in
            ((record, int(header(record, "position") or 0)) for record in records)
            if position > index.position
        )
        return len(records)

    def catch_up(self, timeout: float = 120.0) -> int:
        """Reads up to the end of the topic as it is now; returns the index position."""
        end = self.consumer.end_offsets([self.partition])[self.partition]
        deadline = time.monotonic() + timeout
        with gc_paused(freeze=True):
            while self.consumer.position(self.partition) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.partition.topic}: not at offset {end} after "
                                       f"{timeout:.0f} s")
                self.poll(500)
        return self.index.position

    def follow(self) -> None:
        """Starts a daemon thread that keeps applying new records until `stop()`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="interlock-events-follower")
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.consumer.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.poll()
