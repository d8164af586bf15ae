"""The live access index: the fact base plus materialised current decisions.

It is fed stored events in position order (from the store, or later from Kafka) and answers
`decide` without touching the store. Current decisions are kept per (subject, model) together
with the span of valid time over which they cannot change, so a repeated question is a lookup;
an event drops exactly the decisions it may change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.decision import NO_CONTEXT, Context, Decision, Verdict, as_utc, judge
from domain.facts import Concerns, FactBase
from projections.gc_pause import gc_paused

_Span = tuple[Verdict, datetime | None, datetime | None]
_NOTHING: dict[str, dict[str, _Span]] = {}


def _holding(spans: dict[str, _Span] | None, model: str, at: datetime) -> Verdict | None:
    """The verdict of `spans` for `model` if its span holds `at`."""
    span = None if spans is None else spans.get(model)
    if span is None:
        return None
    verdict, start, end = span
    if (start is None or start <= at) and (end is None or at < end):
        return verdict
    return None


@dataclass(slots=True)
class Applied:
    """One event the index has just applied, as a subscriber sees it: after the index forgot
    the current decisions the event may change (readers already judge on the new facts), and
    before the next event is applied."""

    event: Any
    position: int
    concerns: Concerns
    previous: Callable[[str, str, datetime], Verdict | None]
    """The current verdict the index remembered before the event (and forgot for it), if one
    holds at that time."""
    judged: list[tuple[str, str, Verdict]] = field(default_factory=list)
    """(subject, model, verdict) a subscriber judged at the new position, at valid time
    `judged_at`: the index keeps them as the current ones."""
    judged_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Subscriber:
    applied: Callable[[Applied], None]
    ticked: Callable[[], None] | None
    settled: Callable[[], None] | None


class AccessIndex:
    """Decisions per model version, at any valid time, as known at any position.

    Whoever follows the log calls `apply` / `apply_all`; what must happen on every applied
    event (the kill switch, its reach indexes) subscribes to the index instead of the follower
    (`subscribe`). Readers that need the fact base to stand still across several reads take
    `reading()`.

    An event is visible to `decide` as soon as the fact base has it: the index forgets the
    decisions it may change at once, and only then tells its subscribers, outside the lock
    readers take, so that a kill switch's fan-out to a million subjects never makes a decision
    wait for it or answer from the facts before the order. Appliers take turns on their own
    lock: a subscriber reads a fact base that no other event changes until it returns."""

    def __init__(self, max_cached_subjects: int = 1_000_000) -> None:
        self.facts = FactBase()
        self._current: dict[str, dict[str, _Span]] = {}
        self._max_cached_subjects = max_cached_subjects
        self._lock = threading.RLock()
        """Held while the fact base changes, and by readers that judge on it."""
        self._applying = threading.RLock()
        """Held by whoever applies events, across the subscribers' turn."""
        self._subscribers: list[_Subscriber] = []
        self._settled: list[Callable[[], None]] = []

    @property
    def position(self) -> int:
        return self.facts.position

    def subscribe(
        self,
        applied: Callable[[Applied], None],
        ticked: Callable[[], None] | None = None,
        settled: Callable[[], None] | None = None,
    ) -> None:
        """`applied` is told of every event applied from now on, in order, once readers see it
        (before the next event); `ticked` when time has passed (`tick`); `settled` after each
        batch (an `apply_all`, an `apply`, a `tick`), to hand on what it gathered. None of
        them runs under the lock readers take."""
        self._subscribers.append(_Subscriber(applied, ticked, settled))
        if settled is not None:
            self._settled.append(settled)

    @contextmanager
    def reading(self) -> Iterator[FactBase]:
        """The fact base, unchanged by any follower until the block ends."""
        with self._lock:
            yield self.facts

    def apply(self, event: Any, position: int) -> Concerns:
        """Adds one stored event, forgets the current decisions it may change and tells the
        subscribers."""
        with self._applying:
            concerns = self._apply(event, position)
            self._settle()
        return concerns

    def apply_all(self, events: Iterable[tuple[Any, int]]) -> None:
        """`apply` for (event, position) pairs in order, as one batch."""
        with self._applying:
            if self._subscribers:
                for event, position in events:
                    self._apply(event, position)
            else:
                with self._lock:
                    apply, forget = self.facts.apply, self._forget
                    for event, position in events:
                        forget(apply(event, position))
            self._settle()

    def tick(self) -> None:
        """Lets the subscribers act on the time that has passed (the kill switch's timetable)."""
        with self._applying:
            for subscriber in self._subscribers:
                if subscriber.ticked is not None:
                    subscriber.ticked()
            self._settle()

    def _apply(self, event: Any, position: int) -> Concerns:
        with self._lock:
            concerns = self.facts.apply(event, position)
            forgotten = self._forget(concerns)
        if not self._subscribers:
            return concerns
        applied = Applied(event, position, concerns,
                          lambda subject, model, at: _holding(forgotten.get(subject), model, at))
        with gc_paused() if concerns is None else nullcontext():  # an event for everyone
            for subscriber in self._subscribers:
                subscriber.applied(applied)
            at = applied.judged_at
            if at is not None and applied.judged:
                with self._lock:
                    if self.facts.position == position:
                        for subject, model, verdict in applied.judged:
                            self._remember(subject, model, verdict, at)
        return concerns

    def _settle(self) -> None:
        settled = self._settled
        if settled:
            with gc_paused():  # what an order's fan-out gathered: 100,000s of new objects
                for hand_on in settled:
                    hand_on()

    def _forget(self, concerns: Concerns) -> dict[str, dict[str, _Span]]:
        """Drops the current decisions of the subjects concerned (None: everyone's) and
        returns what it dropped."""
        if concerns is None:
            forgotten, self._current = self._current, {}
            return forgotten
        current = self._current
        if not concerns or not current:
            return _NOTHING
        return {subject: spans for subject in concerns
                if (spans := current.pop(subject, None)) is not None}

    def _remembered(self, subject: str, model: str, at: datetime) -> Verdict | None:
        """The remembered current verdict, if there is one whose span holds `at`."""
        return _holding(self._current.get(subject), model, at)

    def _remember(self, subject: str, model: str, verdict: Verdict, at: datetime) -> None:
        """Keeps a verdict just judged at the current position as the current one around `at`."""
        spans = self._current.get(subject)
        if spans is None:
            if len(self._current) >= self._max_cached_subjects:
                self._current.clear()
            spans = self._current[subject] = {}
        spans[model] = (verdict, *self.facts.validity(subject, at))

    def decide(
        self,
        subject: str,
        model: str,
        at: datetime | None = None,
        as_of: int | None = None,
        known_at: datetime | None = None,
        context: Context = NO_CONTEXT,
    ) -> Decision:
        """The decision at valid time `at` (default now), as known at position `as_of` or at
        recorded time `known_at` (default: everything known)."""
        moment = datetime.now(UTC) if at is None else as_utc(at)
        facts = self.facts
        position = facts.position
        if as_of is None and known_at is None and context is NO_CONTEXT:  # the usual question
            verdict = _holding(self._current.get(subject), model, moment)
            if verdict is None:
                verdict = self._judged_now(subject, model, moment)
            return Decision.of(subject, model, verdict, moment, position)
        if known_at is not None:
            known = facts.position_known_at(known_at)
            as_of = known if as_of is None else min(as_of, known)
        if as_of is not None and as_of < position:
            return Decision.of(
                subject, model, judge(facts, subject, model, moment, as_of, context), moment, as_of
            )
        if context is not NO_CONTEXT and context != NO_CONTEXT:
            return Decision.of(
                subject, model, judge(facts, subject, model, moment, position, context), moment,
                position,
            )
        verdict = self._remembered(subject, model, moment)
        if verdict is None:
            verdict = self._judged_now(subject, model, moment)
        return Decision.of(subject, model, verdict, moment, position)

    def _judged_now(self, subject: str, model: str, at: datetime) -> Verdict:
        """The rule at the current position, remembered as the current verdict."""
        with self._lock:
            verdict = judge(self.facts, subject, model, at, self.facts.position, NO_CONTEXT)
            self._remember(subject, model, verdict, at)
        return verdict
