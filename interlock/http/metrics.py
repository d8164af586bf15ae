"""Prometheus metrics of one serving process, on a registry of its own (so several apps in
one test process do not collide). With `--workers N` each worker counts for itself."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from domain.decision import Decision
from interlock.http.freshness import Lag

EFFECTS = ("allow", "deny", "route")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        decisions = Counter(
            "interlock_decisions", "Decisions answered, by effect.", ["effect"],
            registry=self.registry,
        )
        self._decisions = {effect: decisions.labels(effect) for effect in EFFECTS}
        latency = Histogram(
            "interlock_decide_latency_seconds",
            "Time to answer a decision request (a whole batch for /v1/decide/batch).",
            ["endpoint"], registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0, 2.5),
        )
        self.decide_latency = latency.labels("decide")
        self.batch_latency = latency.labels("batch")
        self.lag_positions = Gauge(
            "interlock_projection_lag_positions",
            "Stored events the access index has not applied yet.", registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "interlock_projection_lag_seconds",
            "How long the oldest stored event the index lacks has been in the store.",
            registry=self.registry,
        )
        self.index_position = Gauge(
            "interlock_index_position", "The last position the access index has applied.",
            registry=self.registry,
        )
        self.commands_applied = Counter(
            "interlock_commands_applied", "Commands stored.", registry=self.registry
        )
        self.commands_rejected = Counter(
            "interlock_commands_rejected", "Commands refused (nothing of them stored), a "
            "request to POST /v1/commands refused as a whole included.", registry=self.registry,
        )
        self.commands_repeated = Counter(
            "interlock_commands_repeated", "Commands skipped as repeats of an applied "
            "command_id.", registry=self.registry,
        )
        self._errors = Counter(
            "interlock_http_errors", "Responses with a 4xx or 5xx status, by status (413: body "
            "over the limit, 422: malformed, 409: conflict or behind, 503: no stream slot or "
            "not ready).", ["status"], registry=self.registry,
        )
        self._enforced: Gauge | None = None
        self.streams = Gauge(
            "interlock_enforcement_streams", "Open /v1/enforcement/stream connections.",
            registry=self.registry,
        )

    def answered(self, status: int) -> None:
        """Counts a response; only errors are, so the decision path pays nothing."""
        if status >= 400:
            self._errors.labels(str(status)).inc()

    def count(self, decision: Decision) -> None:
        self._decisions[decision.effect].inc()

    def count_all(self, decisions: Iterable[Decision]) -> None:
        for effect, number in Tally(decision.effect for decision in decisions).items():
            self._decisions[effect].inc(number)

    def show_lag(self, lag: Lag) -> None:
        self.lag_positions.set(lag.positions)
        self.lag_seconds.set(lag.seconds)
        self.index_position.set(lag.index_position)

    def show_enforcement(self, enforced_position: Callable[[], int]) -> None:
        """Embedded mode: where the in-process kill switch has got to, read at each scrape
        (again on each start of the app: a restarted engine has a new kill switch)."""
        if self._enforced is None:
            self._enforced = Gauge(
                "interlock_enforced_position", "Embedded mode: the last position whose access "
                "changes the kill switch has published.", registry=self.registry,
            )
        self._enforced.set_function(enforced_position)

    def render(self) -> bytes:
        return generate_latest(self.registry)

