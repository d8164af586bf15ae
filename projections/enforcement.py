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
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from domain.aggregates import Directive
from domain.application import Clock, system_clock
from domain.decision import NO_CONTEXT, Reason, Verdict, judge, reasons_json, sorted_reasons
from domain.facts import FactBase
from domain.subjects import Profile
from projections.access_index import AccessIndex, Applied
from projections.reach import Reach

_INSTANT = timedelta(microseconds=1)
_TIMED_FIELDS = ("effective_at", "valid_from", "valid_until")
ALWAYS = datetime.min.replace(tzinfo=UTC)
"""`at` of a decision that holds at every earlier valid time too."""


class AccessChange(NamedTuple):
    """An `access_revoked` or `access_restored` record, keyed by subject on the wire (a tuple:
    an order's fan-out makes tens of thousands of them)."""

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
    cites: tuple[str, ...] = ()
    """When not empty: for each listed subject, in order, the personal entitlement its allow
    cites, the ref of the one `entitled` reason in `reasons` (which are the first subject's).
    Members of a class differ in nothing else, so a lift restoring 200,000 subjects with plans
    of their own is a few groups, not 200,000."""

    def changes(self) -> Iterator[AccessChange]:
        """The group as one change per subject, in the order listed."""
        make = AccessChange._make
        kind, model, effect, route_to, disclosed, reasons, at = (
            self.kind, self.model, self.effect, self.route_to, self.disclosed, self.reasons,
            self.at)
        tail = (self.position, self.received_at, self.recorded_at, self.emitted_at, self.first)
        if not self.cites:
            for subject in self.subjects:
                yield make((kind, subject, model, effect, route_to, disclosed, reasons, at,
                            *tail))
            return
        for subject, cited in zip(self.subjects, self.cites, strict=True):
            yield make((kind, subject, model, effect, route_to, disclosed,
                        citing(reasons, cited), at, *tail))

    @property
    def shape(self) -> tuple[Reason, ...]:
        """The reasons as every listed subject has them (`shape`)."""
        return shape(self.reasons, self.cites)


def shape(reasons: tuple[Reason, ...], cites: Sequence[str]) -> tuple[Reason, ...]:
    """What subjects that each cite an entitlement of their own (`cites`) share of `reasons`:
    the cited ref blank; without `cites`, the reasons themselves."""
    return citing(reasons, None) if cites else reasons


def citing(reasons: tuple[Reason, ...], entitlement: str | None) -> tuple[Reason, ...]:
    """`reasons` with the ref of their one `entitled` reason replaced by `entitlement` (None:
    the shape alike subjects share, whatever their own entitlement is)."""
    return tuple(Reason("entitled", entitlement) if reason.code == "entitled" else reason
                 for reason in reasons)


@dataclass(frozen=True, slots=True)
class _Cause:
    event: Any
    position: int
    received_at: datetime | None
    recorded_at: datetime


class Enforcer:
    """The kill switch, as a subscriber of an access index: it compares the decisions each
    applied event changes and gathers the access changes as `ChangeGroup`s, handed to
    `publish` after each batch the index applies (or taken by `apply` / `take`).

    Subjects whose facts are alike (one `Profile`, see `domain.subjects`) are judged once: the
    rule, the valid time from which the new decision holds and whether it is a first grant are
    the same for all of them, as known at the event, so an order reaching 700,000 subjects
    costs a judgement per profile and a list of names. Subjects a directive names, and the
    personal entitlement ids an allow cites, are kept apart per subject.

    While `emitting` is False (catching up on history already enforced) it only keeps its
    reach indexes and timetable."""

    by_profile_above = 1.0
    """Subjects are grouped by profile (see `_classes`) when they outnumber the interned
    profiles this many times over; fewer are looked up one by one."""

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
        self._gathered: list[ChangeGroup] = []
        self._gathering = threading.Lock()
        self._restricted: dict[Profile, Profile] = {}
        self._restricted_to: frozenset[str] | None = None
        self.enforced_position = index.position
        """The position whose changes have all been handed to `publish` (or gathered for
        `take`): where the kill switch has got to, which may trail the index's position by
        the fan-out under way."""
        index.subscribe(self._applied, self._ticked, self._settled)

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
        """The changes gathered since the last take, one per (subject, model)."""
        return [change for group in self.take_groups() for change in group.changes()]

    def take_groups(self) -> list[ChangeGroup]:
        """The changes gathered since the last take, packed (what `publish` is handed)."""
        with self._gathering:
            groups, self._gathered = self._gathered, []
        return groups

    def _gather(self, groups: list[ChangeGroup]) -> None:
        if groups:
            with self._gathering:
                self._gathered += groups

    def _settled(self) -> None:
        if self.publish is not None:
            groups = self.take_groups()
            if groups:
                self.publish(groups)
        self.enforced_position = self.index.position

    def _ticked(self) -> None:
        if self.emitting:
            self._gather(self.tick_groups())

    def _applied(self, applied: Applied) -> None:
        """One event the index applied (its reach indexes already have it).

        The decision before the event is the one the index held (and forgot for the event)
        when it held one, else the rule as known at the previous position."""
        now = self.clock()
        event, position = applied.event, applied.position
        later = [moment for moment in _moments(event) if moment > now]
        if not later and not self.emitting:
            return
        cause = self._schedule(event, position, later)
        if not self.emitting:
            return
        facts = self.index.facts

        def before(subject: str, model: str) -> Verdict:
            return applied.previous(subject, model, now) or judge(
                facts, subject, model, now, position - 1, NO_CONTEXT
            )

        self._gather(self._compare(
            cause, before, now, only_restricts=isinstance(event, Directive.Issued),
            known_before=position - 1,
        ))

    def _schedule(self, event: Any, position: int, moments: Iterable[datetime]) -> _Cause:
        """Timetables the event's `moments` (those later than now) and returns its cause."""
        cause = _Cause(event, position, self._received_at(event), event.timestamp)
        for moment in moments:
            heapq.heappush(self._timetable, (moment, position, cause))
        return cause

    def resume(self, stored: Callable[[list[int]], Iterable[tuple[Any, int]]]) -> None:
        """Timetables what the events the index already holds (an index restored from a
        snapshot, never fed to this enforcer) have still to come, as if they had been fed:
        `stored` reads back the events at the positions the facts give (`timed_after`), and
        each one's moments later than now are timetabled with its cause, exactly as
        `_applied` does."""
        now = self.clock()
        for event, position in stored(timed_after(self.index.facts, now)):
            self._schedule(event, position, [m for m in _moments(event) if m > now])

    def tick(self) -> list[AccessChange]:
        """Changes whose moment has come since the facts behind them were recorded."""
        return [change for group in self.tick_groups() for change in group.changes()]

    def tick_groups(self) -> list[ChangeGroup]:
        """`tick`, packed."""
        now = self.clock()
        groups: list[ChangeGroup] = []
        facts = self.index.facts
        while self._timetable and self._timetable[0][0] <= now:
            moment, _, cause = heapq.heappop(self._timetable)
            position = facts.position
            before = moment - _INSTANT
            groups += self._compare(
                cause,
                lambda subject, model, before=before, position=position: judge(
                    facts, subject, model, before, position, NO_CONTEXT
                ),
                moment,
            )
        return groups

    @property
    def next_moment(self) -> datetime | None:
        """When `tick` next has work to do."""
        return self._timetable[0][0] if self._timetable else None

    def _compare(
        self,
        cause: _Cause,
        before: Any,
        at: datetime,
        only_restricts: bool = False,
        known_before: int | None = None,
    ) -> list[ChangeGroup]:
        """Changes of access at `at` among the pairs the cause can reach, one judgement per
        class of alike subjects. `only_restricts`: the cause can only take access away (a new
        directive adds a restriction and nothing else), so pairs without access before need no
        second look. `known_before`: the position the old decisions were known at, when the
        cause is a new event; without it the change happens at `at` itself (a moment that
        came), as known now.

        A class is judged through its first member: what differs between members (positions,
        evidence, personal entitlement ids) changes no decision as known at the event, which
        stores no fact of theirs, and the ids an allow cites are each member's own."""
        facts = self.index.facts
        position = facts.position
        emitted_at = self.clock()
        found: dict[tuple[Any, ...], list[str]] = {}
        for subjects, models in self.reach.reached(cause.event):
            for members in self._classes(subjects):
                judged = members[0]
                for model in models:
                    old = before(judged, model)
                    if only_restricts and old.effect != "allow":
                        continue
                    new = judge(facts, judged, model, at, position, NO_CONTEXT)
                    if (old.effect == "allow") == (new.effect == "allow"):
                        continue
                    if known_before is None:  # the moment `at` came: just before it, `old`
                        since, first = at, new.effect == "allow" and not had_access(
                            facts, judged, model, at - _INSTANT, position)
                    else:  # a new event: `old` held at `at` as known before it
                        since = holds_since(facts, judged, model, new, at, position)
                        first = new.effect == "allow" and not had_access(
                            facts, judged, model, at, known_before)
                    kind = "access_restored" if new.effect == "allow" else "access_revoked"
                    for verdict, named, cites in _per_member(facts, judged, members, new):
                        key = (kind, model, verdict.effect, verdict.route_to, verdict.disclosed,
                               shape(verdict.reasons, cites), since, first)
                        group = found.get(key)
                        if group is None:
                            found[key] = (verdict.reasons, list(named), list(cites))
                        else:
                            group[1].extend(named)
                            group[2].extend(cites)
        return [
            ChangeGroup(kind, model, effect, route_to, disclosed, reasons, since, cause.position,
                        cause.received_at, cause.recorded_at, emitted_at, first, tuple(named),
                        tuple(cites))
            for (kind, model, effect, route_to, disclosed, _, since, first), (reasons, named, cites)
            in found.items()
        ]

    def _classes(self, subjects: Collection[str]) -> list[list[str]]:
        """The subjects this enforcer owns, in classes of alike subjects: one profile as far
        as the attestation kinds the rule reads (`Reach.read_kinds`). What the rule does not
        read changes no decision at any valid time, so neither the decision nor the times
        from which it holds; a subject that a directive names is a class of its own.

        Many subjects (an order's reach) are grouped by profile: each profile's members among
        them found by one set intersection, so the work grows with the profiles, not with
        the subjects; a few (one subject's event) are looked up one by one."""
        owns = self.owns
        facts = self.index.facts
        kinds = self.reach.read_kinds
        if kinds is not self._restricted_to:
            self._restricted, self._restricted_to = {}, kinds
        restricted = self._restricted
        named = self.reach.named
        alone = [[subject] for subject in named.intersection(subjects)
                 if owns is None or owns(subject)]
        by_profile: list[tuple[Profile, Collection[str]]] = []
        if len(subjects) > self.by_profile_above * len(facts.profiles):
            among = subjects if isinstance(subjects, set | frozenset) else set(subjects)
            found = 0
            for profile in facts.profiles.held():
                members = profile.members & among
                if members:
                    found += len(members)
                    if named:
                        members.difference_update(named)
                    by_profile.append((profile, members))
            if found < len(among):  # subjects without a record: each its own class
                records = facts.records
                alone += [[subject] for subject in among.difference(named)
                          if subject not in records and (owns is None or owns(subject))]
        else:
            records = facts.records
            grouped: defaultdict[Profile, list[str]] = defaultdict(list)
            for subject in subjects:
                if subject in named or (owns is not None and not owns(subject)):
                    continue
                record = records.get(subject)
                if record is None:
                    alone.append([subject])
                else:
                    grouped[record.profile].append(subject)
            by_profile += grouped.items()
        classes: dict[Profile, list[str]] = {}
        for profile, members in by_profile:
            if owns is not None and isinstance(members, set):
                members = [subject for subject in members if owns(subject)]
            if not members:
                continue
            key = restricted.get(profile)
            if key is None:
                key = restricted[profile] = facts.profiles.restricted(profile, kinds)
            joined = classes.get(key)
            if joined is None:
                classes[key] = list(members)
            else:
                joined += members
        return [*classes.values(), *alone]

    def _received_at(self, event: Any) -> datetime | None:
        if isinstance(event, Directive.Issued | Directive.Amended | Directive.Lifted):
            return self.index.facts.directives[self.index.facts.name_of(event)].received_at
        return None


def _per_member(
    facts: FactBase, judged: str, members: list[str], verdict: Verdict
) -> list[tuple[Verdict, list[str], list[str]]]:
    """The verdict judged for `judged` as each member of its class has it, as (verdict,
    members, what each cites): the same, unless it cites personal entitlements, which are each
    member's own (the member's grant in the same place of its grants). One cited grant is the
    usual case: one verdict (the first member's) and each member's entitlement beside it."""
    cited = {reason.ref for reason in verdict.reasons if reason.code == "entitled"}
    grants = facts.records[judged].grants
    places = [place for place, grant in enumerate(grants) if grant.entitlement in cited]
    if not places:
        return [(verdict, members, [])]
    records = facts.records
    own = []
    entitled = [i for i, reason in enumerate(verdict.reasons) if reason.code == "entitled"]
    if len(entitled) == 1 and len(places) == 1:  # one cited grant: it stays in its place
        (place,) = places
        cites = [records[member].grants[place].entitlement for member in members]
        return [(verdict._replace(reasons=citing(verdict.reasons, cites[0])), members, cites)]
    for member in members:
        theirs = records[member].grants
        renamed = {grants[place].entitlement: theirs[place].entitlement for place in places}
        reasons = sorted_reasons(
            Reason(r.code, renamed.get(r.ref, r.ref)) if r.code == "entitled" else r
            for r in verdict.reasons
        )
        own.append((verdict._replace(reasons=reasons), [member], []))
    return own


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


def timed_after(facts: FactBase, now: datetime) -> list[int]:
    """The positions, in order, of the stored events that may carry a valid time later than
    `now` (a superset of those `_moments` finds later): every event of a subject one of whose
    facts starts or stops holding after `now`, of an organisation's entitlement likewise, and
    every event of a directive or model version (there are few)."""
    found: set[int] = set()
    later: dict[Profile, bool] = {}
    for record in facts.records.values():
        profile = record.profile
        pending = later.get(profile)
        if pending is None:
            pending = later[profile] = bool(profile.times) and profile.times[-1] > now
        if pending:  # index -1: the position at which the subject became known
            found.update(record.position_of(i) for i in range(-1, len(profile.facts)))
    for entitlements in facts.org_entitlements.values():
        for entitlement in entitlements:
            revocations = entitlement._revocations or ()  # the property would make a list
            times = [entitlement.valid_from, entitlement.valid_until,
                     *(effective_at for effective_at, _ in revocations)]
            if any(time is not None and time > now for time in times):
                found.add(entitlement.position)
                found.update(position for _, position in revocations)
    for model in facts.models.values():
        found.update(position for _, position, _ in model.changes)
    for directive in facts.directives.values():
        found.add(directive.position)
        found.update(position for _, position, _ in directive.amendments)
        if directive.lift is not None:
            found.add(directive.lift[1])
    return sorted(found)


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
