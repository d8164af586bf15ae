"""Where embedded mode sends access changes: an in-process log readers can follow (the
enforcement stream), and optionally a JSON-lines file.

The log holds the same packed records `interlock enforce` puts on `interlock.enforcement`
(`consumers.packing`: one record per verdict and partition of the default topic, subjects
listed), numbered in order. The file keeps one line per (subject, model) change, the form the
orders report reads.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from projections.enforcement import ChangeGroup
from projections.gc_pause import gc_paused

if TYPE_CHECKING:
    from consumers.packing import EnforcementRecord


class RevocationLog:
    """Numbered packed records, kept in memory (the most recent, up to `capacity` changes in
    all) and optionally appended to a file; `wait_after` lets a reader thread block until
    something new arrives, `next_after` an event-loop task wait without holding a thread."""

    def __init__(self, path: Path | None = None, capacity: int = 1_000_000) -> None:
        from consumers.packing import ENFORCEMENT_PARTITIONS, Packer, Partitioner

        self.path = path
        self.capacity = capacity
        self._packer = Packer(Partitioner(ENFORCEMENT_PARTITIONS))
        self._records: deque[tuple[int, EnforcementRecord]] = deque()
        self._held = 0
        """Changes the records held carry together."""
        self._last = 0
        self._arrived = threading.Condition()
        self._wakers: set[Callable[[], None]] = set()

    @property
    def last(self) -> int:
        """The number of the latest record, 0 before any."""
        return self._last

    def learn(self, subjects: Iterable[str]) -> None:
        """Computes the partitions of `subjects` ahead (a population, before the first order:
        see `consumers.packing.Partitioner`)."""
        with gc_paused(freeze=True):  # kept for good: out of the collector's way
            self._packer.partitioner.learn(subjects)

    def publish(self, groups: list[ChangeGroup]) -> None:
        with gc_paused():  # an order's records: many objects, no cycles
            records = self._packer.records(groups)
        with self._arrived:
            for record in records:
                self._last += 1
                self._records.append((self._last, record))
                self._held += record.changes
            while self._held > self.capacity and len(self._records) > 1:
                self._held -= self._records.popleft()[1].changes
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as sink:
                    sink.writelines(json.dumps(change.to_json()) + "\n"
                                    for group in groups for change in group.changes())
            self._arrived.notify_all()
            for wake in self._wakers:
                wake()

    def after(self, number: int) -> list[tuple[int, EnforcementRecord]]:
        """The records numbered above `number` that are still held."""
        with self._arrived:
            return self._held_after(number)

    def _held_after(self, number: int) -> list[tuple[int, EnforcementRecord]]:
        return [item for item in self._records if item[0] > number]

    def wait_after(self, number: int, timeout: float) -> list[tuple[int, EnforcementRecord]]:
        with self._arrived:
            self._arrived.wait_for(lambda: self._last > number, timeout)
        return self.after(number)

    async def next_after(self, number: int, timeout: float
                         ) -> list[tuple[int, EnforcementRecord]]:
        """`wait_after` for a task on an event loop: it waits on the loop, so a thousand
        waiting readers take no thread from the pool that serves other requests, and a
        cancelled one (its client gone) stops waiting at once."""
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:
            with suppress(RuntimeError):  # the loop has closed; its waiter is gone with it
                loop.call_soon_threadsafe(arrived.set)

        with self._arrived:
            if self._last > number:
                return self._held_after(number)
            self._wakers.add(wake)
        try:
            await asyncio.wait_for(arrived.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._arrived:
                self._wakers.discard(wake)
        return self.after(number)
