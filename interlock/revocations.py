"""Where embedded mode sends access changes: an in-process log readers can follow, and
optionally a JSON-lines file."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from projections.enforcement import AccessChange, ChangeGroup


class RevocationLog:
    """Numbered access changes, kept in memory (the most recent `capacity`) and optionally
    appended to a file; `wait_after` lets a reader thread block until something new arrives,
    `next_after` an event-loop task wait without holding a thread."""

    def __init__(self, path: Path | None = None, capacity: int = 1_000_000) -> None:
        self.path = path
        self._changes: deque[tuple[int, AccessChange]] = deque(maxlen=capacity)
        self._last = 0
        self._arrived = threading.Condition()
        self._wakers: set[Callable[[], None]] = set()

    @property
    def last(self) -> int:
        """The number of the latest change, 0 before any."""
        return self._last

    def publish(self, groups: list[ChangeGroup]) -> None:
        changes = [change for group in groups for change in group.changes()]
        with self._arrived:
            for change in changes:
                self._last += 1
                self._changes.append((self._last, change))
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as sink:
                    sink.writelines(json.dumps(c.to_json()) + "\n" for c in changes)
            self._arrived.notify_all()
            for wake in self._wakers:
                wake()

    def after(self, number: int) -> list[tuple[int, AccessChange]]:
        """The changes numbered above `number` that are still held."""
        with self._arrived:
            return self._held_after(number)

    def _held_after(self, number: int) -> list[tuple[int, AccessChange]]:
        return [item for item in self._changes if item[0] > number]

    def wait_after(self, number: int, timeout: float) -> list[tuple[int, AccessChange]]:
        with self._arrived:
            self._arrived.wait_for(lambda: self._last > number, timeout)
        return self.after(number)

    async def next_after(self, number: int, timeout: float) -> list[tuple[int, AccessChange]]:
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
