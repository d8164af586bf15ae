"""Writing a decision log: served decisions sealed and stored from one thread, in group
commits."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from projections.decision_log.entry import Chain, Pending
from projections.decision_log.stores import DecisionLog

Settle = Callable[[list[Any], BaseException | None], None]


class LogWriter:
    """Appends served decisions to a log from one thread, in group commits: whatever arrived
    while the previous commit ran is sealed and stored in the next one.

    `submit` with a token (strict mode) has the writer call `settle(tokens, error)` once per
    commit for the tokens it covered, after the entries are durable (error None) or could not
    be stored; without one (best-effort) nothing waits, at most `capacity` decisions queue, and
    what cannot be queued or stored is counted by `on_dropped(count, reason)`. With `linger`
    the writer waits that long after the first decision arrives before it commits (for
    best-effort, where nobody waits for the commit)."""

    MAX_COMMIT = 20_000
    """Decisions per commit at most, whole submissions (a batch request is never split)."""

    def __init__(self, log: DecisionLog, chain: Chain, family_of: Callable[[str], str | None],
                 capacity: int, settle: Settle | None = None,
                 on_written: Callable[[int], None] | None = None,
                 on_dropped: Callable[[int, str], None] | None = None,
                 linger: float = 0.0) -> None:
        self.log = log
        self._linger = linger
        self.chain = chain
        self._family_of = family_of
        self._capacity = capacity
        self._settle = settle
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._queue: deque[tuple[Sequence[Pending], Any]] = deque()
        self._queued = 0
        self._ready = threading.Condition()
        self._waiting = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def submit(self, pending: Sequence[Pending], token: Any = None) -> bool:
        """Queues decisions; False (and counted as dropped) when the queue is full or the
        writer has stopped."""
        if not pending:
            raise ValueError("nothing to log")
        with self._ready:
            if self._stopping or (token is None and self._queued + len(pending)
                                  > self._capacity):
                full = not self._stopping
                accepted = False
            else:
                self._queue.append((pending, token))
                self._queued += len(pending)
                if self._waiting:
                    self._ready.notify()
                accepted = True
        if not accepted and self._on_dropped is not None:
            self._on_dropped(len(pending), "queue_full" if full else "stopped")
        return accepted

    def _take(self) -> list[tuple[Sequence[Pending], Any]] | None:
        with self._ready:
            while not self._queue:
                if self._stopping:
                    return None
                self._waiting = True
                self._ready.wait()
                self._waiting = False
            if self._linger:  # let more arrive: fewer, larger commits, fewer GIL handovers
                deadline = time.monotonic() + self._linger
                while (not self._stopping and self._queued < self.MAX_COMMIT
                       and (left := deadline - time.monotonic()) > 0):
                    self._ready.wait(left)
            taken = []
            count = 0
            while self._queue and (not taken or count + len(self._queue[0][0])
                                   <= self.MAX_COMMIT):
                item = self._queue.popleft()
                taken.append(item)
                count += len(item[0])
            self._queued -= count
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            pending = [p for batch, _ in taken for p in batch]
            tokens = [token for _, token in taken if token is not None]
            error: BaseException | None = None
            try:
                entries = self.chain.seal(pending, self._family_of)
                self.log.append(entries)
                self.chain.advance(entries[-1])
            except Exception as failure:  # the log's store failed: settle, count, go on
                error = failure
            if tokens and self._settle is not None:
                self._settle(tokens, error)
            if error is None:
                if self._on_written is not None:
                    self._on_written(len(pending))
            elif self._on_dropped is not None:
                unsettled = sum(len(batch) for batch, token in taken if token is None)
                if unsettled:
                    self._on_dropped(unsettled, "write_failed")

    def close(self, timeout: float = 10.0) -> None:
        """Stores what is queued, then stops the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join(timeout)
