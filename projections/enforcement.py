"""The kill switch: every (subject, model) whose access an event turns off, or back on.

For each stored event the enforcer compares decisions just before and just after it, but only
for the pairs the event can reach (see `projections.reach`). Facts that take effect later than
they are recorded (an order effective at 18:00, an attestation that expires) are kept in a
timetable and compared again when their moment comes (`tick`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from domain.aggregates import Directive
from domain.application import Clock, system_clock
from domain.decision import NO_CONTEXT, Reason, Verdict, judge
from projections.access_index import AccessIndex
from projections.gc_pause import gc_paused
from projections.reach import Reach

_INSTANT = timedelta(microseconds=1)
_TIMED_FIELDS = ("effective_at", "valid_from", "valid_until")


@dataclass(frozen=True, slots=True)
class AccessChange:
    """An `access_revoked` or `access_restored` record, keyed by subject on the wire."""

    kind: Literal["access_revoked", "access_restored"]
    subject: str
    model: str
    effect: str
    route_to: str | None
    disclosed: bool
    reasons: tuple[Reason, ...]
    at: datetime
    """The valid time from which the new decision holds."""
    position: int
    """The position of the event that caused the change."""
    received_at: datetime | None
    """When the causing order was received, for directive events."""
    recorded_at: datetime
    """When the causing event was recorded."""
    emitted_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "subject": self.subject,
            "model": self.model,
            "effect": self.effect,
            "route_to": self.route_to,
            "disclosed": self.disclosed,
            "reasons": [reason.to_json() for reason in self.reasons],
            "at": self.at.isoformat(),
            "position": self.position,
            "received_at": None if self.received_at is None else self.received_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "emitted_at": self.emitted_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class _Cause:
    event: Any
    position: int
    received_at: datetime | None
    recorded_at: datetime


class Enforcer:
    """Feeds an access index and reports the access changes each event causes."""

    def __init__(self, index: AccessIndex, clock: Clock = system_clock) -> None:
        self.index = index
        self.reach = Reach(index.facts)
        self.clock = clock
        self._timetable: list[tuple[datetime, int, _Cause]] = []

    def apply(self, event: Any, position: int, emit: bool = True) -> list[AccessChange]:
        """Applies one stored event; with `emit` False (catching up on history already
        enforced) it only updates its state.

        The decision before the event is the index's current one when it holds one (a lookup),
        else the rule as known at the previous position; the decision after it is judged and
        becomes the index's current one, so the next event finds it."""
        index = self.index
        now = self.clock()
        with index.lock:
            concerns = index.apply(event, position, forget=False)
            self.reach.apply(event)
            cause = _Cause(event, position, self._received_at(event), event.timestamp)
            for moment in _moments(event):
                if moment > now:
                    heapq.heappush(self._timetable, (moment, position, cause))
            if not emit:
                index.forget(concerns)
                return []
            facts = index.facts
            judged: list[tuple[str, str, Verdict]] = []

            def before(subject: str, model: str) -> Verdict:
                return index.current(subject, model, now) or judge(
                    facts, subject, model, now, position - 1, NO_CONTEXT
                )

            with gc_paused():
                changes = self._compare(
                    cause, before, now, judged, only_restricts=isinstance(event, Directive.Issued)
                )
                index.forget(concerns)
                for subject, model, verdict in judged:
                    index.remember(subject, model, verdict, now)
        return changes

    def tick(self) -> list[AccessChange]:
        """Changes whose moment has come since the facts behind them were recorded."""
        now = self.clock()
        changes: list[AccessChange] = []
        facts = self.index.facts
        while self._timetable and self._timetable[0][0] <= now:
            moment, _, cause = heapq.heappop(self._timetable)
            position = facts.position
            before = moment - _INSTANT
            changes += self._compare(
                cause,
                lambda subject, model, before=before, position=position: judge(
                    facts, subject, model, before, position, NO_CONTEXT
                ),
                moment,
            )
        return changes

    @property
    def next_moment(self) -> datetime | None:
        """When `tick` next has work to do."""
        return self._timetable[0][0] if self._timetable else None

    def _compare(
        self,
        cause: _Cause,
        before: Any,
        at: datetime,
        judged: list[tuple[str, str, Verdict]] | None = None,
        only_restricts: bool = False,
    ) -> list[AccessChange]:
        """Changes of access at `at` among the pairs the cause can reach. `only_restricts`: the
        cause can only take access away (a new directive adds a restriction and nothing else),
        so pairs without access before need no second look."""
        facts = self.index.facts
        position = facts.position
        changes = []
        for subject, models in self.reach.pairs(cause.event):
            for model in models:
                old = before(subject, model)
                if only_restricts and old.effect != "allow":
                    continue
                new = judge(facts, subject, model, at, position, NO_CONTEXT)
                if judged is not None:
                    judged.append((subject, model, new))
                if (old.effect == "allow") == (new.effect == "allow"):
                    continue
                changes.append(_change(subject, model, new, at, cause, self.clock()))
        return changes

    def _received_at(self, event: Any) -> datetime | None:
        if isinstance(event, Directive.Issued | Directive.Amended | Directive.Lifted):
            return self.index.facts.directives[self.index.facts.name_of(event)].received_at
        return None


def _change(
    subject: str, model: str, new: Verdict, at: datetime, cause: _Cause, emitted_at: datetime
) -> AccessChange:
    return AccessChange(
        "access_restored" if new.effect == "allow" else "access_revoked", subject, model,
        new.effect, new.route_to, new.disclosed, new.reasons, at, cause.position, cause.received_at,
        cause.recorded_at, emitted_at,
    )


def _moments(event: Any) -> Iterable[datetime]:
    """The valid times at which the facts an event carries start or stop holding."""
    for name in _TIMED_FIELDS:
        moment = getattr(event, name, None)
        if moment is not None:
            yield moment
    terms = getattr(event, "terms", None)
    if terms and terms.get("expires_at"):
        yield datetime.fromisoformat(terms["expires_at"])
