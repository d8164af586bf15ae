"""The bitemporal fact base: every stored fact with its valid time and its position.

It answers "what held at valid time t, as known at position p" by lookup, without replaying
events: each subject keeps its attestation histories (interned, see `domain.subjects`), each
model, entitlement and directive its own changes (`domain.histories`). It is fed events in
position order and does no I/O.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right, insort
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.aggregates import (
    CommandReceipt,
    Directive,
    Entitlement,
    ModelVersion,
    Subject,
)
from domain.histories import DirectiveFacts, EntitlementFacts, ModelFacts
from domain.selectors import selector_matches as selector_matches
from domain.subjects import (
    Attestation,
    Granted,
    GrantRevoked,
    Profiles,
    Stated,
    SubjectFacts,
    SubjectRecord,
    Withdrawn,
    around,
)
from domain.terms import DirectiveTerms

__all__ = [
    "Attestation", "DirectiveFacts", "DirectiveTerms", "EntitlementFacts", "ModelFacts",
    "SubjectFacts", "SubjectRecord", "selector_matches",
]

Concerns = tuple[str, ...] | None
"""The subjects whose decisions an event may change; None when it may change anyone's."""

NATIONALITY, LOCATION, EMPLOYER = "nationality", "location", "employer"
ATTRIBUTE_KIND = {
    "citizenship": NATIONALITY,
    "residency": NATIONALITY,
    "location": LOCATION,
    "employer": EMPLOYER,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class FactBase:
    """All facts, indexed for lookups by subject, org and model."""

    def __init__(self) -> None:
        self.position = 0
        self.models: dict[str, ModelFacts] = {}
        self.records: dict[str, SubjectRecord] = {}
        """Subject to its record: its profile and what is its own (see `domain.subjects`)."""
        self.entitlements: dict[str, EntitlementFacts] = {}
        self.org_entitlements: dict[str, list[EntitlementFacts]] = {}
        self.directives: dict[str, DirectiveFacts] = {}
        self._directives_by_model: dict[str, list[DirectiveFacts]] = {}
        self._ids: dict[int, Any] = {}
        """Aggregate id (as an int) to its facts: an entitlement's facts, or the name of a
        model or directive."""
        self._subject_ids: dict[int, SubjectRecord] = {}
        """Subject aggregate id (as an int) to its record: a table of its own, so that a
        million subjects and their entitlements do not share (and double) one table."""
        self.global_times: list[datetime] = []
        """Valid times at which a fact concerning many subjects starts or stops holding."""
        self.profiles = Profiles()
        self._stated: dict[tuple[Any, ...], Any] = {}
        """One instance per distinct attestation statement, revocation or personal grant."""
        self._value_sets: dict[tuple[tuple[str, frozenset[str]], ...], dict[str, frozenset[str]]]
        self._value_sets = {}
        self._moments: dict[datetime, datetime] = {}
        self._selector_memos: dict[tuple[str, ...], dict[str, bool]] = {}
        """Per distinct list of model selectors, which models it covers (shared by every
        entitlement granted for that list, as is the list itself: `_selectors`)."""
        self._selectors: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._positions: array[int] | None = None
        """The position of each applied event, kept only once they stop being consecutive:
        until then the i-th event's is `_first + i`."""
        self._first = 0
        self._recorded = array("q")
        """Microseconds since the epoch at which the event at `_positions[i]` was recorded,
        never earlier than the one before."""
        self._last_recorded: datetime | None = None
        """The last recorded time `_recorded` holds exactly, to skip converting it again."""
        self._recorded_as: dict[int, datetime] = {}
        """Recorded times not given back exactly by `_recorded` (made later than an earlier
        one, or with another offset), by position."""

    @property
    def subjects(self) -> Mapping[str, SubjectFacts]:
        """Subject to its facts, one object each, built when read."""
        return _SubjectsView(self)

    def apply(self, event: Any, position: int) -> Concerns:
        """Adds one stored event and says whose decisions it may change."""
        if position <= self.position:
            raise ValueError(f"event at position {position} is not after {self.position}")
        self.position = position
        recorded_at = event.timestamp
        recorded = self._recorded
        if (recorded_at == self._last_recorded and self._positions is None
                and position == self._first + len(recorded)):
            recorded.append(recorded[-1])  # the events of one command, in a row
        else:
            self._note_recorded(recorded_at, position)
        return _APPLY[type(event)](self, event, position)

    def directives_for(self, model: str) -> list[DirectiveFacts]:
        """The directives whose selectors have ever named `model`, in issue order: a decision
        looks at these only, however many directives there are for other models."""
        found = self._directives_by_model.get(model)
        if found is None:
            facts = self.models.get(model)
            family = facts.family if facts is not None else ""
            found = self._directives_by_model[model] = [
                directive for directive in self.directives.values()
                if any(terms.covers(model, family) for terms in directive.all_terms())
            ]
        return found

    def name_of(self, event: Any) -> str:
        """The name (model, entitlement, subject or directive id) of the event's aggregate."""
        key = event.originator_id.int
        found = self._ids.get(key)
        if found is None:
            return self._subject_ids[key].subject
        if type(found) is str:
            return found
        name: str = found.entitlement
        return name

    def record_of(self, event: Any) -> SubjectRecord:
        """The record of the subject a subject event is about."""
        return self._subject_ids[event.originator_id.int]

    def position_known_at(self, known_at: datetime) -> int:
        """The last position all of whose events had been recorded by `known_at`."""
        index = bisect_right(self._recorded, (known_at - _EPOCH) // _MICROSECOND)
        if not index:
            return 0
        return self._first + index - 1 if self._positions is None else self._positions[index - 1]

    def recorded_at(self, position: int) -> datetime | None:
        if self._positions is None:
            index = min(max(position - self._first + 1, 0), len(self._recorded))
        else:
            index = bisect_right(self._positions, position)
        return _EPOCH + self._recorded[index - 1] * _MICROSECOND if index else None

    def recorded_as(self, position: int) -> datetime:
        """The recorded time of the event at `position` exactly as the event carried it."""
        found = self._recorded_as.get(position)
        if found is not None:
            return found
        recorded = self.recorded_at(position)
        assert recorded is not None
        return recorded

    def validity(self, subject: str, at: datetime) -> tuple[datetime | None, datetime | None]:
        """The widest [start, end) around `at` in which no fact about `subject` changes."""
        start, end = around(self.global_times, at)
        record = self.records.get(subject)
        if record is not None and record.profile.times:
            s_start, s_end = around(record.profile.times, at)
            if s_start is not None and (start is None or s_start > start):
                start = s_start
            if s_end is not None and (end is None or s_end < end):
                end = s_end
        return start, end

    def _note_recorded(self, recorded_at: datetime, position: int) -> None:
        recorded = self._recorded
        if recorded_at == self._last_recorded:  # the events of one command share their time
            recorded.append(recorded[-1])
        else:
            micros = (recorded_at - _EPOCH) // _MICROSECOND
            self._last_recorded = recorded_at
            if recorded and micros < recorded[-1]:
                micros = recorded[-1]
                self._last_recorded = None
                self._recorded_as[position] = recorded_at
            elif recorded_at.tzinfo is not UTC:
                self._last_recorded = None
                self._recorded_as[position] = recorded_at
            recorded.append(micros)
        positions = self._positions
        if positions is not None:
            positions.append(position)
        elif len(recorded) == 1:
            self._first = position
        elif position != self._first + len(recorded) - 1:  # a gap: keep them from now on
            positions = self._positions = array("q", range(self._first, self._first + len(
                recorded) - 1))
            positions.append(position)

    def _subject(self, subject: str, position: int) -> SubjectRecord:
        record = self.records.get(subject)
        if record is None:
            record = self.records[subject] = SubjectRecord(subject, self.profiles.empty, position)
        return record

    def _fact(self, key: tuple[Any, ...], make: Any) -> Any:
        found = self._stated.get(key)
        if found is None:
            found = self._stated[key] = make()
        return found

    def _model_registered(self, e: ModelVersion.Registered, position: int) -> Concerns:
        self._ids[e.originator_id.int] = e.model
        self.models[e.model] = ModelFacts(e.model, e.family, position)
        self._directives_by_model.pop(e.model, None)
        return None

    def _model_changed(self, e: Any, position: int) -> Concerns:
        model = self.models[self._ids[e.originator_id.int]]
        model.changes.append((e.effective_at, position, isinstance(e, ModelVersion.Withdrawn)))
        insort(self.global_times, e.effective_at)
        return None

    def _entitlement_granted(self, e: Entitlement.Granted, position: int) -> Concerns:
        selectors = tuple(e.models)
        memo = self._selector_memos.get(selectors)
        if memo is None:
            memo = self._selector_memos[selectors] = {}
            self._selectors[selectors] = selectors
        selectors = self._selectors[selectors]
        valid_from, valid_until = self._moment(e.valid_from), self._moment(e.valid_until)
        organisation = e.grantee_kind == "org"
        record = None if organisation else self._subject(e.grantee, position)
        facts = EntitlementFacts(  # the names it shares are held once: the record's, interned
            e.entitlement, sys.intern(e.grantee_kind),
            e.grantee if record is None else record.subject, selectors, valid_from,
            valid_until, position, e.timestamp, _covers=memo,
        )
        self._ids[e.originator_id.int] = facts
        self.entitlements[e.entitlement] = facts
        if record is None:
            self.org_entitlements.setdefault(e.grantee, []).append(facts)
            self._note_times(self.global_times, e.valid_from, e.valid_until)
            return None
        granted = self._fact(("granted", selectors, valid_from, valid_until),
                             lambda: Granted(selectors, valid_from, valid_until))
        record.add(self.profiles.adding(record.profile, granted), position)
        record.grants = (*record.grants, facts)
        return (e.grantee,)

    def _entitlement_revoked(self, e: Entitlement.Revoked, position: int) -> Concerns:
        facts: EntitlementFacts = self._ids[e.originator_id.int]
        facts.revocations.append((e.effective_at, position))
        if facts.grantee_kind == "org":
            insort(self.global_times, e.effective_at)
            return None
        record = self.records[facts.grantee]
        ordinal = record.grants.index(facts)
        effective_at = self._moment(e.effective_at)
        revoked = self._fact(("grant_revoked", ordinal, effective_at),
                             lambda: GrantRevoked(ordinal, effective_at))
        record.add(self.profiles.adding(record.profile, revoked), position)
        return (facts.grantee,)

    def _subject_registered(self, e: Subject.Registered, position: int) -> Concerns:
        self._subject_ids[e.originator_id.int] = self._subject(e.subject, position)
        return (e.subject,)

    def _attested(self, e: Any, position: int) -> Concerns:
        record = self._subject_ids[e.originator_id.int]
        kind = type(e)
        if kind is Subject.NationalityAttested:
            said: tuple[Any, ...] = (NATIONALITY, tuple(e.citizenships), tuple(e.residencies))
        elif kind is Subject.LocationAttested:
            said = (LOCATION, e.country)
        else:
            said = (EMPLOYER, e.org)
        evidence = e.evidence
        key = (said, e.valid_from, e.valid_until, e.source, evidence is not None,
               e.valid_from > e.timestamp)
        stated = self._stated.get(key)
        if stated is None:
            stated = self._stated[key] = self._statement(e, *key)
        profile = record.profile.next.get(stated)
        record.add(profile or self.profiles.adding(record.profile, stated), position)
        if evidence is not None:
            record.add_evidence(evidence)
        return (record.subject,)

    def _statement(
        self, e: Any, said: tuple[Any, ...], valid_from: datetime, valid_until: datetime | None,
        source: str, evidenced: bool, ahead: bool,
    ) -> Stated:
        if said[0] == NATIONALITY:
            values = {"citizenship": frozenset(said[1]), "residency": frozenset(said[2])}
        elif said[0] == LOCATION:
            values = {"location": frozenset((said[1],))}
        else:
            values = {"employer": frozenset((said[1],))}
        return Stated(said[0], self._shared(values), self._moment(valid_from),
                      self._moment(valid_until), sys.intern(source), evidenced, ahead)

    def _attestation_revoked(self, e: Subject.AttestationRevoked, position: int) -> Concerns:
        record = self._subject_ids[e.originator_id.int]
        kind, effective_at = e.kind, self._moment(e.effective_at)
        withdrawn = self._fact(("withdrawn", kind, effective_at),
                               lambda: Withdrawn(kind, effective_at))
        record.add(self.profiles.adding(record.profile, withdrawn), position)
        return (record.subject,)

    def _directive_issued(self, e: Directive.Issued, position: int) -> Concerns:
        self._ids[e.originator_id.int] = e.directive
        self._directives_by_model.clear()
        self.directives[e.directive] = DirectiveFacts(
            e.directive, e.authority, e.reference, e.received_at, e.effective_at, position,
            e.timestamp, dict(e.terms),
        )
        self._note_times(self.global_times, e.effective_at, e.expiry())
        return None

    def _directive_amended(self, e: Directive.Amended, position: int) -> Concerns:
        facts = self.directives[self._ids[e.originator_id.int]]
        facts.amendments.append((e.effective_at, position, dict(e.terms)))
        self._directives_by_model.clear()
        self._note_times(self.global_times, e.effective_at, e.expiry())
        return None

    def _directive_lifted(self, e: Directive.Lifted, position: int) -> Concerns:
        facts = self.directives[self._ids[e.originator_id.int]]
        facts.lift = (e.effective_at, position)
        insort(self.global_times, e.effective_at)
        return None

    def _moment(self, moment: datetime | None) -> datetime | None:
        """One instance per distinct valid time: populations share a few (a birth date, the
        start of a contract), and each datetime object costs 48 bytes."""
        if moment is None:
            return None
        return self._moments.setdefault(moment, moment)

    def _shared(self, values: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        """One read-only instance per distinct set of attribute values: most subjects share a
        handful of nationalities, and the index should cost little memory per subject."""
        key = tuple(sorted(values.items(), key=lambda item: item[0]))
        return self._value_sets.setdefault(key, values)

    @staticmethod
    def _note_times(times: list[datetime], *moments: datetime | None) -> None:
        for moment in moments:
            if moment is not None:
                insort(times, moment)


class _SubjectsView(Mapping[str, SubjectFacts]):
    """`FactBase.subjects`: each subject's facts as objects, built from its record on read."""

    __slots__ = ("_facts",)

    def __init__(self, facts: FactBase) -> None:
        self._facts = facts

    def __getitem__(self, subject: str) -> SubjectFacts:
        return self._facts.records[subject].facts(self._facts.recorded_as)

    def __contains__(self, subject: object) -> bool:
        return subject in self._facts.records

    def __iter__(self) -> Iterator[str]:
        return iter(self._facts.records)

    def __len__(self) -> int:
        return len(self._facts.records)


_APPLY: dict[type, Any] = {
    ModelVersion.Registered: FactBase._model_registered,
    ModelVersion.Withdrawn: FactBase._model_changed,
    ModelVersion.Reinstated: FactBase._model_changed,
    Entitlement.Granted: FactBase._entitlement_granted,
    Entitlement.Revoked: FactBase._entitlement_revoked,
    Subject.Registered: FactBase._subject_registered,
    Subject.NationalityAttested: FactBase._attested,
    Subject.LocationAttested: FactBase._attested,
    Subject.EmployerAttested: FactBase._attested,
    Subject.AttestationRevoked: FactBase._attestation_revoked,
    Directive.Issued: FactBase._directive_issued,
    Directive.Amended: FactBase._directive_amended,
    Directive.Lifted: FactBase._directive_lifted,
    CommandReceipt.Received: lambda facts, event, position: (),
}
