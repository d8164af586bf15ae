"""The engine behind the HTTP API, with the two rules the API adds to the index:

- read-your-writes: a request that names a position the index has not reached waits for it
  (catching up from the store) up to a bound, and is then refused rather than answered stale;
- fail closed: while the index lags the store beyond the staleness bound, decisions for models
  that an active directive scopes are denied with `stale_index`; other models are served.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool

from domain.commands import Command, CommandError, parse_command
from domain.decision import Decision, Reason, scope
from domain.limits import MAX_BATCH_COMMANDS, MAX_COMMAND_BYTES
from domain.queries import DecisionRequest
from interlock.auth import Tokens
from interlock.config import SNAPSHOT_OFF, snapshot_path, start_snapshot, store_url
from interlock.engine import Engine, open_engine
from interlock.http.decisions import LogMetrics, ServedLog
from interlock.http.freshness import Freshness, Refresher
from interlock.http.metrics import Metrics
from interlock.http.settings import ServeSettings
from interlock.signing import OfficerKeys
from projections.access_index import AccessIndex
from projections.reach import Reach
from projections.snapshot import restore_index

if TYPE_CHECKING:
    from projections.enforcement import Enforcer

STALE = (Reason("stale_index"),)
POLL_SECONDS = 0.01
"""How often a read-your-writes wait looks for the position again."""


@dataclass(frozen=True, slots=True)
class CommandsOutcome:
    applied: int
    position: int
    rejected: tuple[int, CommandError] | None = None
    """(index in the request, why) of the command that stopped the list."""
    repeated: int = 0
    """Commands skipped as repeats of an applied `command_id`."""


def command_documents(data: Any) -> list[Any]:
    """One command, or `{"commands": [...]}` of at most MAX_BATCH_COMMANDS, as the list of
    command documents to apply."""
    if isinstance(data, dict) and "commands" in data and "type" not in data:
        extra = sorted(set(data) - {"commands"})
        if extra:
            raise CommandError(extra[0], "unknown field")
        if not isinstance(data["commands"], list):
            raise CommandError("commands", "expects a list of commands")
        if len(data["commands"]) > MAX_BATCH_COMMANDS:
            raise CommandError("commands", f"at most {MAX_BATCH_COMMANDS:,} commands in one "
                               f"request, not {len(data['commands']):,}")
        return data["commands"]
    return [data]


def parse_document(document: Any) -> Command:
    """One command of a request body: the domain's checks, then the bound on one command's
    size that a line of `interlock apply` or a Kafka message meets (as compact JSON)."""
    command = parse_command(document)
    try:
        size = len(orjson.dumps(document))
    except orjson.JSONEncodeError:  # deeper than orjson encodes, as no command in the limits is
        raise CommandError("", "nested too deeply") from None
    if size > MAX_COMMAND_BYTES:
        raise CommandError("", f"the command is {size:,} bytes as JSON, over the limit of "
                           f"{MAX_COMMAND_BYTES:,}")
    return command


class Service:
    """One process's engine (store, index, follower), tokens, officer keys and metrics.

    The engine is opened by `start` and closed by `close`, the app's lifespan, so an app can be
    started again after it stopped (as test clients do)."""

    engine: Engine
    index: AccessIndex
    freshness: Freshness

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.tokens = None if settings.tokens is None else Tokens(settings.tokens)
        self.officer_keys = None if settings.officer_keys is None else OfficerKeys.from_table(
            settings.officer_keys, "officer keys"
        )
        self.metrics = Metrics()
        self._writing = threading.Lock()
        self._refresher: Refresher | None = None
        self._events: Any = None
        """The events-topic follower of a replica (`follow="kafka"`)."""
        self.decision_log: ServedLog | None = None
        """Where served decisions are logged (`--decision-log`), if anywhere."""
        self._log_metrics = None if settings.decision_log is None else LogMetrics(
            self.metrics.registry)

    def start(self) -> None:
        """Opens the store, builds the index, then follows the store (or, as a replica, the
        events topic) and watches the lag."""
        settings = self.settings
        if settings.follow == "kafka":
            from consumers.events_follower import EventsFollower
            from consumers.kafka import Topics

            self.engine = open_engine(
                settings.store, check_signature=self.officer_keys, catch_up=False
            )
            topics = Topics.prefixed(settings.topic_prefix)
            snapshot = snapshot_path()
            restored = snapshot and restore_index(snapshot, self.engine.app.recorder,
                                                  replaying=topics.events)
            self.index = restored[0] if restored else AccessIndex()
            self._events = EventsFollower(self.index, settings.kafka or "", topics)
            self._events.catch_up()
            self._events.follow()
        else:
            self.engine = open_engine(
                settings.store, check_signature=self.officer_keys, enforce=True,
                revocation_file=Path(settings.revocation_file) if settings.revocation_file
                else None, snapshot=start_snapshot(store_url(settings.store)) or SNAPSHOT_OFF,
            )
            self.index = self.engine.index
            enforcer = self.engine.enforcer
            if enforcer is not None:
                self.metrics.show_enforcement(lambda: enforcer.enforced_position)
            self.engine.follower.follow(settings.follow_interval)
        self.freshness = Freshness(
            self.index, lambda: self.engine.app.position, settings.max_lag_seconds
        )
        self._refresher = Refresher(self._refresh, settings.refresh_interval)
        self._refresher.start()
        if self._log_metrics is not None:
            self.decision_log = ServedLog(settings, self._log_metrics, self._family_of)

    def _family_of(self, model: str) -> str | None:
        found = self.index.facts.models.get(model)
        return None if found is None else found.family

    @property
    def _enforcer(self) -> Enforcer | None:
        """The embedded kill switch; a replica has none."""
        return None if self._events is not None else self.engine.enforcer

    @property
    def candidate_indexes(self) -> Reach | None:
        """The embedded enforcer's candidate indexes, for impact and diff."""
        enforcer = self._enforcer
        return None if enforcer is None else enforcer.reach

    @property
    def enforced_position(self) -> int | None:
        """Where the embedded kill switch has got to."""
        enforcer = self._enforcer
        return None if enforcer is None else enforcer.enforced_position

    def catch_up(self, position: int | None = None) -> None:
        """Brings the index towards `position` now: from the store in embedded mode; a replica
        has its follower thread on the events topic and can only wait."""
        if self._events is None:
            self.engine.follower.catch_up(position)

    def close(self) -> None:
        if self.decision_log is not None:
            self.decision_log.close()
            self.decision_log = None
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None
        if self._events is not None:
            self._events.stop()
            self._events = None
        self.engine.close()

    def _refresh(self) -> None:
        self.freshness.refresh()
        self.metrics.show_lag(self.freshness.lag())

    # --- decisions --------------------------------------------------------------------------

    async def wait_for_position(self, position: int) -> bool:
        """Waits (catching up from the store) until the index has applied `position`;
        False when the wait bound passes first."""
        index = self.index
        if index.position >= position:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.wait_seconds
        while True:
            await run_in_threadpool(self.catch_up, position)
            if index.position >= position:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(POLL_SECONDS, remaining))

    def decide(self, request: DecisionRequest) -> Decision:
        index = self.index
        with index.reading():
            decision = index.decide(
                request.subject, request.model, at=request.at, as_of=request.as_of,
                known_at=request.known_at, context=request.context,
            )
            if decision.as_of >= index.position and self.freshness.stale():
                return self._fail_closed(decision)
        return decision

    def decide_all(self, requests: Iterable[DecisionRequest]) -> list[Decision]:
        """Decisions for many requests, all as known at one position and, where a request
        gives no valid time, at one moment."""
        index = self.index
        now = datetime.now(UTC)
        decide = index.decide
        with index.reading():
            decisions = [
                decide(r.subject, r.model, r.at or now, r.as_of, r.known_at, r.context)
                for r in requests
            ]
            if self.freshness.stale():
                position = index.position
                decisions = [
                    self._fail_closed(d) if d.as_of >= position else d for d in decisions
                ]
        return decisions

    def _fail_closed(self, decision: Decision) -> Decision:
        """`stale_index` in place of a decision for a model an active directive scopes."""
        facts = self.index.facts
        model = facts.models.get(decision.model)
        if model is None:
            return decision
        if scope(facts, model.model, model.family, decision.at, facts.position):
            return Decision(decision.subject, decision.model, "deny", None, False, STALE,
                            decision.at, decision.as_of)
        return decision

    # --- commands ---------------------------------------------------------------------------

    def apply(self, documents: list[Any]) -> CommandsOutcome:
        """Applies commands in order, one writer at a time, then brings the index up to the
        new position so this replica reads its own writes at once."""
        rejected = None
        with self._writing:
            with self.engine.app.batch() as batch:
                for number, document in enumerate(documents):
                    try:
                        batch.apply(parse_document(document))
                    except CommandError as error:
                        rejected = (number, error)
                        break
            self.catch_up()
        result = batch.result
        self.metrics.commands_applied.inc(result.applied)
        self.metrics.commands_repeated.inc(result.repeated)
        if rejected is not None:
            self.metrics.commands_rejected.inc()
        return CommandsOutcome(result.applied, result.position, rejected, result.repeated)
