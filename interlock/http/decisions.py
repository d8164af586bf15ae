"""The served-decision log of `interlock serve --decision-log DEST` (read by `GET /v1/decisions`,
interlock/http/auditor.py).

Every decision answered by `/v1/decide` and `/v1/decide/batch` gets a decision id (the
`X-Interlock-Decision-Id` header and the `decision_id` field) and an entry in the log
(projections/decision_log/), written by one thread per process in group commits:

- **strict** (the default): a decision is answered only once its entry is durable; when the log
  cannot store it, the request is refused with 503 and the decision is not served;
- **best-effort**: decisions are answered at once and queue for the writer (up to
  `decision_log_queue` of them); those that find the queue full, or whose write fails, are
  counted in `interlock_decision_log_dropped_total{reason}`, never silently lost.

With a retention, the log is pruned every tenth of it (at most hourly) of entries older.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field

from domain.decision import Decision
from domain.queries import DecisionRequest
from interlock.decision_log import open_decision_log, replica_id
from interlock.http.models import (
    DecisionOut,
    Time,
    _Body,
)
from interlock.http.settings import ServeSettings
from projections.decision_log import (
    Chain,
    DecisionIds,
    LogWriter,
    Pending,
)

DECISION_ID_HEADER = "X-Interlock-Decision-Id"
PRUNE_EVERY_AT_MOST = timedelta(hours=1)
BEST_EFFORT_LINGER = 0.005
"""Seconds a best-effort writer collects decisions before a commit."""

DecisionId = Annotated[UUID, Field(description="The decision id the log keeps it under, to "
                                              "cite it.")]


class ServedDecisionOut(DecisionOut):
    """The normative decision JSON; with a decision log, also the id it is logged under."""

    decision_id: DecisionId | None = None


class ServedBatchOut(_Body):
    decisions: list[ServedDecisionOut]
    """In request order."""


class LoggedDecisionOut(DecisionOut):
    """A served decision as the log keeps it: the normative decision JSON, its id, when and by
    which replica it was served, what the request added, and its place in the hash chain."""

    decision_id: DecisionId
    kind: Literal["decision"]
    served_at: Time
    replica: str
    family: str | None
    known_at: Time | None
    location: str | None
    purpose: str | None
    chain: str
    seq: Annotated[int, Field(ge=1)]
    link: str


class DecisionLogOut(_Body):
    decisions: list[LoggedDecisionOut]
    """By served time."""
    more: bool
    """More decisions match than `limit`: narrow the filters, or page with `from`."""


class LogMetrics:
    """The decision log's metrics, on the service's registry (made once per app)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter("interlock_decision_log_written",
                               "Served decisions stored in the decision log.", registry=registry)
        self.dropped = Counter("interlock_decision_log_dropped",
                               "Served decisions the log did not keep (best-effort mode): the "
                               "queue was full, the write failed, or the server was stopping.",
                               ["reason"], registry=registry)
        for reason in ("queue_full", "write_failed", "stopped"):
            self.dropped.labels(reason)  # shown as 0 until the first drop
        self.refused = Counter("interlock_decision_log_refused",
                               "Decisions not answered because the log could not store them "
                               "(strict mode).", registry=registry)
        self.pruned = Counter("interlock_decision_log_pruned",
                              "Entries removed from the decision log by scheduled pruning.",
                              registry=registry)
        self.prune_failures = Counter("interlock_decision_log_prune_failures",
                                      "Scheduled prunes that failed.", registry=registry)
        self.queued = Gauge("interlock_decision_log_queued",
                            "Served decisions waiting for the log's writer.", registry=registry)


class ServedLog:
    """One process's decision log: its store, chain, writer thread, metrics and pruning."""

    def __init__(self, settings: ServeSettings, metrics: LogMetrics,
                 family_of: Callable[[str], str | None]) -> None:
        assert settings.decision_log is not None
        self.strict = settings.decision_log_mode == "strict"
        self.replica = replica_id(settings.replica_name)
        self.log = open_decision_log(settings.decision_log, settings.kafka,
                                     settings.topic_prefix, durable=self.strict)
        self.metrics = metrics
        self._ids = DecisionIds()
        self.writer = LogWriter(
            self.log, Chain(self.replica), family_of, settings.decision_log_queue,
            settle=_settle, on_written=metrics.written.inc,
            on_dropped=lambda count, reason: metrics.dropped.labels(reason).inc(count),
            linger=0.0 if self.strict else BEST_EFFORT_LINGER,
        )
        metrics.queued.set_function(lambda: self.writer.queued)
        self._stop = threading.Event()
        self._pruner = None
        if settings.retention_seconds is not None:
            retention = timedelta(seconds=settings.retention_seconds)
            self._pruner = threading.Thread(target=self._prune_every, args=(retention,),
                                            name="decision-log-prune", daemon=True)
            self._pruner.start()

    async def record(self, asks: Sequence[DecisionRequest], decisions: Sequence[Decision]
                     ) -> list[str] | None:
        """Logs served decisions and returns their ids; None (strict) when the log could not
        store them, so they must not be answered."""
        if not decisions:
            return []
        ids = self._ids.take(len(decisions))
        served = time.time_ns() // 1000
        pending: list[Pending] = [
            (entry_id, served, decision, ask.known_at, ask.location, ask.purpose)
            for entry_id, ask, decision in zip(ids, asks, decisions, strict=True)
        ]
        if not self.strict:
            self.writer.submit(pending)
            return ids
        future = asyncio.get_running_loop().create_future()
        if not self.writer.submit(pending, future) or await future is not None:
            self.metrics.refused.inc(len(ids))
            return None
        return ids

    def _prune_every(self, retention: timedelta) -> None:
        interval = max(1.0, min(retention / 10, PRUNE_EVERY_AT_MOST).total_seconds())
        while True:
            try:
                result = self.log.prune(datetime.now(UTC) - retention, self.replica)
                self.metrics.pruned.inc(result.removed)
            except Exception as error:  # a failing store must not stop serving; it is counted
                self.metrics.prune_failures.inc()
                sys.stderr.write(f"interlock serve: decision log prune failed: {error}\n")
            if self._stop.wait(interval):
                return

    def close(self) -> None:
        """Stores what is queued, stops pruning, closes the log."""
        self._stop.set()
        self.writer.close()
        if self._pruner is not None:
            self._pruner.join(10)
        self.log.close()


def _settle(futures: list[Any], error: BaseException | None) -> None:
    """Wakes strict requests once per commit and event loop (not once per request)."""
    by_loop: dict[Any, list[asyncio.Future[BaseException | None]]] = defaultdict(list)
    for future in futures:
        by_loop[future.get_loop()].append(future)
    for loop, waiting in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, waiting, error)


def _resolve(futures: list[asyncio.Future[BaseException | None]],
             error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            future.set_result(error)
