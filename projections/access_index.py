"""The live access index: the fact base plus materialised current decisions.

It is fed stored events in position order (from the store, or later from Kafka) and answers
`decide` without touching the store. Current decisions are kept per (subject, model) together
with the span of valid time over which they cannot change, so a repeated question is a lookup;
an event drops exactly the decisions it may change.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from domain.decision import NO_CONTEXT, Context, Decision, Verdict, as_utc, judge
from domain.facts import Concerns, FactBase

_Span = tuple[Verdict, datetime | None, datetime | None]


class AccessIndex:
    """Decisions per model version, at any valid time, as known at any position."""

    def __init__(self, max_cached_subjects: int = 1_000_000) -> None:
        self.facts = FactBase()
        self._current: dict[str, dict[str, _Span]] = {}
        self._max_cached_subjects = max_cached_subjects
        self.lock = threading.RLock()

    @property
    def position(self) -> int:
        return self.facts.position

    def apply(self, event: Any, position: int, forget: bool = True) -> Concerns:
        """Adds one stored event and forgets the current decisions it may change. With `forget`
        False the caller reads the old current decisions first, then calls `forget` itself."""
        with self.lock:
            concerns = self.facts.apply(event, position)
            if forget:
                self.forget(concerns)
            return concerns

    def forget(self, concerns: Concerns) -> None:
        """Drops the current decisions of the subjects concerned (None: everyone's)."""
        with self.lock:
            if concerns is None:
                self._current.clear()
            else:
                for subject in concerns:
                    self._current.pop(subject, None)

    def current(self, subject: str, model: str, at: datetime) -> Verdict | None:
        """The remembered current verdict, if there is one whose span holds `at`."""
        spans = self._current.get(subject)
        span = None if spans is None else spans.get(model)
        if span is None:
            return None
        verdict, start, end = span
        if (start is None or start <= at) and (end is None or at < end):
            return verdict
        return None

    def remember(self, subject: str, model: str, verdict: Verdict, at: datetime) -> None:
        """Keeps a verdict just judged at the current position as the current one around `at`."""
        with self.lock:
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
        return Decision.of(subject, model, self._current_verdict(subject, model, moment), moment,
                           position)

    def _current_verdict(self, subject: str, model: str, at: datetime) -> Verdict:
        verdict = self.current(subject, model, at)
        if verdict is None:
            with self.lock:
                verdict = judge(self.facts, subject, model, at, self.facts.position, NO_CONTEXT)
                self.remember(subject, model, verdict, at)
        return verdict
