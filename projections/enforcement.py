"""The kill switch: every (subject, model) whose access an event turns off, or back on.

For each stored event the enforcer compares decisions just before and just after it, but only
for the pairs the event can reach (see `projections.reach`). Facts that take effect later than
they are recorded (an order effective at 18:00, an attestation that expires) are kept in a
timetable and compared again when their moment comes (`tick`).

A record's `at` is the valid time from which its new decision holds: for a change found when
an event is applied, the earliest valid time from which the new verdict holds without a break
up to the moment of enforcing, as known with the event (an order recorded days after it took
effect is dated by when it took effect); for a change whose moment came, that moment. An
`access_restored` record is `first` when the pair had no access at any earlier valid time, as
known just before the change: a first grant rather than access given back.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from domain.aggregates import Directive
from domain.application import Clock, system_clock
from domain.decision import NO_CONTEXT, Reason, Verdict, judge, reasons_json
from domain.facts import FactBase
from projections.access_index import AccessIndex, Applied
from projections.reach import Reach

_INSTANT = timedelta(microseconds=1)
_TIMED_FIELDS = ("effective_at", "valid_from", "valid_until")
ALWAYS = datetime.min.replace(tzinfo=UTC)
"""`at` of a decision that holds at every earlier valid time too."""


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
    first: bool = False
    """For access_restored: the pair had no access at any earlier valid time, as known just
    before the change (a first grant, not a restoration)."""

    def to_json(self) -> dict[str, Any]:
        data = {
            "type": self.kind,
            "subject": self.subject,
            "model": self.model,
            "effect": self.effect,
            "route_to": self.route_to,
            "disclosed": self.disclosed,
            "reasons": reasons_json(self.reasons),
            "at": self.at.isoformat(),
            "position": self.position,
            "received_at": None if self.received_at is None else self.received_at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "emitted_at": self.emitted_at.isoformat(),
        }
        if self.kind == "access_restored":
            data["first"] = self.first
        return data


@dataclass(frozen=True, slots=True)
class ChangeGroup:
    """The changes one causing event makes, from one valid time, to the access of several
    subjects to one model, all to the same new verdict: the unit the kill switch packs onto the
    wire (the subjects listed once, the verdict and its reasons once)."""

    kind: Literal["access_revoked", "access_restored"]
    model: str
    effect: str
    route_to: str | None
    disclosed: bool
    reasons: tuple[Reason, ...]
    at: datetime
    position: int
    received_at: datetime | None
    recorded_at: datetime
    emitted_at: datetime
    first: bool
    subjects: tuple[str, ...]

    def changes(self) -> Iterator[AccessChange]:
        """The group as one change per subject, in the order listed."""
        for subject in self.subjects:
            yield AccessChange(
                self.kind, subject, self.model, self.effect, self.route_to, self.disclosed,
                self.reasons, self.at, self.position, self.received_at, self.recorded_at,
                self.emitted_at, self.first,
            )


def grouped(changes: Iterable[AccessChange]) -> list[ChangeGroup]:
    """Per-subject changes packed into groups of everything but the subject, in the order each
    group first appears; a subject's changes keep their order within its model."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for change in changes:
        key = (change.kind, change.model, change.effect, change.route_to, change.disclosed,
               change.reasons, change.at, change.position, change.received_at,
               change.recorded_at, change.emitted_at, change.first)
        groups.setdefault(key, []).append(change.subject)
    return [ChangeGroup(*key, tuple(subjects)) for key, subjects in groups.items()]


@dataclass(frozen=True, slots=True)
class _Cause:
    event: Any
    position: int
    received_at: datetime | None
    recorded_at: datetime


class Enforcer:
    """The kill switch, as a subscriber of an access index: it compares the decisions each
    applied event changes and gathers the access changes, handed to `publish` after each batch
    the index applies (or taken by `apply` / `take`).

    While `emitting` is False (catching up on history already enforced) it only keeps its
    reach indexes and timetable."""

    def __init__(
        self,
        index: AccessIndex,
        clock: Clock = system_clock,
        publish: Callable[[list[ChangeGroup]], None] | None = None,
        emitting: bool = True,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.index = index
        self.owns = owns
        """The subjects this enforcer reports on (a shard's share); None: every subject."""
        self.reach = Reach.following(index)
        self.clock = clock
        self.publish = publish
        self.emitting = emitting
        self._timetable: list[tuple[datetime, int, _Cause]] = []
        self._gathered: list[AccessChange] = []
        self._gathering = threading.Lock()
        index.subscribe(self._applied, self._ticked, self._settled if publish else None)

    def apply(self, event: Any, position: int, emit: bool = True) -> list[AccessChange]:
        """Applies one stored event to the index and returns the changes it caused; with `emit`
        False (history already enforced) there are none."""
        emitting, self.emitting = self.emitting, emit
        try:
            self.index.apply(event, position)
        finally:
            self.emitting = emitting
        return self.take()

    def take(self) -> list[AccessChange]:
        """The changes gathered since the last take."""
        with self._gathering:
            changes, self._gathered = self._gathered, []
        return changes

    def take_groups(self) -> list[ChangeGroup]:
        """The changes gathered since the last take, packed (what `publish` is handed)."""
        return grouped(self.take())

    def _gather(self, changes: list[AccessChange]) -> None:
        if changes:
            with self._gathering:
                self._gathered += changes

    def _settled(self) -> None:
        groups = self.take_groups()
        if groups and self.publish is not None:
            self.publish(groups)

    def _ticked(self) -> None:
        if self.emitting:
            self._gather(self.tick())

    def _applied(self, applied: Applied) -> None:
        """One event the index applied (its reach indexes already have it).

        The decision before the event is the index's current one when it held one (a lookup),
        else the rule as known at the previous position; the decision after it is judged and
        becomes the index's current one, so the next event finds it."""
        now = self.clock()
        event, position = applied.event, applied.position
        cause = _Cause(event, position, self._received_at(event), event.timestamp)
        for moment in _moments(event):
            if moment > now:
                heapq.heappush(self._timetable, (moment, position, cause))
        if not self.emitting:
            return
        facts = self.index.facts

        def before(subject: str, model: str) -> Verdict:
            return applied.previous(subject, model, now) or judge(
                facts, subject, model, now, position - 1, NO_CONTEXT
            )

        self._gather(self._compare(
            cause, before, now, applied.judged, only_restricts=isinstance(event, Directive.Issued),
            known_before=position - 1,
        ))
        applied.judged_at = now

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
        known_before: int | None = None,
    ) -> list[AccessChange]:
        """Changes of access at `at` among the pairs the cause can reach. `only_restricts`: the
        cause can only take access away (a new directive adds a restriction and nothing else),
        so pairs without access before need no second look. `known_before`: the position the
        old decisions were known at, when the cause is a new event; without it the change
        happens at `at` itself (a moment that came), as known now."""
        facts = self.index.facts
        position = facts.position
        emitted_at = self.clock()
        changes = []
        owns = self.owns
        for subject, models in self.reach.pairs(cause.event):
            if owns is not None and not owns(subject):
                continue
            for model in models:
                old = before(subject, model)
                if only_restricts and old.effect != "allow":
                    continue
                new = judge(facts, subject, model, at, position, NO_CONTEXT)
                if judged is not None:
                    judged.append((subject, model, new))
                if (old.effect == "allow") == (new.effect == "allow"):
                    continue
                if known_before is None:  # the moment `at` came: just before it, `old`
                    since, first = at, new.effect == "allow" and not had_access(
                        facts, subject, model, at - _INSTANT, position)
                else:  # a new event: `old` held at `at` as known before it
                    since = holds_since(facts, subject, model, new, at, position)
                    first = new.effect == "allow" and not had_access(
                        facts, subject, model, at, known_before)
                changes.append(_change(subject, model, new, since, cause, emitted_at, first))
        return changes

    def _received_at(self, event: Any) -> datetime | None:
        if isinstance(event, Directive.Issued | Directive.Amended | Directive.Lifted):
            return self.index.facts.directives[self.index.facts.name_of(event)].received_at
        return None


def holds_since(
    facts: FactBase, subject: str, model: str, verdict: Verdict, at: datetime, position: int
) -> datetime:
    """The earliest valid time from which `verdict` holds without a break up to `at`, as known
    at `position`. Decisions only change where one of the subject's facts or a global one
    starts or stops holding, so it is enough to look just before each such time, going back;
    no look is needed where a directive or entitlement the verdict cites starts (before it,
    no verdict can cite it)."""
    starts = _cited_starts(facts, verdict)
    start = facts.validity(subject, at)[0]
    while start is not None and start not in starts and judge(
        facts, subject, model, start - _INSTANT, position, NO_CONTEXT
    ) == verdict:
        start = facts.validity(subject, start - _INSTANT)[0]
    return ALWAYS if start is None else start


def _cited_starts(facts: FactBase, verdict: Verdict) -> set[datetime]:
    """When the directives and entitlements a verdict cites start to hold."""
    starts = set()
    for reason in verdict.reasons:
        if reason.code in ("directive", "route") and reason.ref in facts.directives:
            starts.add(facts.directives[reason.ref].effective_at)
        elif reason.code == "entitled" and reason.ref in facts.entitlements:
            starts.add(facts.entitlements[reason.ref].valid_from)
    return starts


def had_access(facts: FactBase, subject: str, model: str, when: datetime, position: int) -> bool:
    """Whether the pair was allowed at a valid time before the span around `when`, as known at
    `position` (the caller knows it had no access at `when`): one look per earlier span
    between the times at which its facts change, latest first."""
    start = facts.validity(subject, when)[0]
    while start is not None:
        moment = start - _INSTANT
        if judge(facts, subject, model, moment, position, NO_CONTEXT).effect == "allow":
            return True
        start = facts.validity(subject, moment)[0]
    return False


def _change(
    subject: str, model: str, new: Verdict, at: datetime, cause: _Cause, emitted_at: datetime,
    first: bool,
) -> AccessChange:
    return AccessChange(
        "access_restored" if new.effect == "allow" else "access_revoked", subject, model,
        new.effect, new.route_to, new.disclosed, new.reasons, at, cause.position, cause.received_at,
        cause.recorded_at, emitted_at, first,
    )


def _moments(event: Any) -> Iterable[datetime]:
    """The valid times at which the facts an event carries start or stop holding."""
    for name in _TIMED_FIELDS:
        moment = getattr(event, name, None)
        if moment is not None:
            yield moment
    expires_at = (event.expiry() if isinstance(event, Directive.Issued | Directive.Amended)
                  else None)
    if expires_at is not None:
        yield expires_at
