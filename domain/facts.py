"""The bitemporal fact base: every stored fact with its valid time and its position.

It answers "what held at valid time t, as known at position p" by lookup, without replaying
events: each subject keeps its attestation histories, each entitlement and directive its own
changes. It is fed events in position order and does no I/O.
"""

from __future__ import annotations

import sys
from bisect import bisect_right, insort
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.aggregates import (
    CommandReceipt,
    Directive,
    Entitlement,
    ModelVersion,
    Subject,
)
from domain.selectors import covers as _covers
from domain.selectors import selector_matches as selector_matches
from domain.terms import DirectiveTerms, TermsChange

Concerns = tuple[str, ...] | None
"""The subjects whose decisions an event may change; None when it may change anyone's."""

NATIONALITY, LOCATION, EMPLOYER = "nationality", "location", "employer"
ATTRIBUTE_KIND = {
    "citizenship": NATIONALITY,
    "residency": NATIONALITY,
    "location": LOCATION,
    "employer": EMPLOYER,
}


@dataclass(slots=True)
class ModelFacts:
    model: str
    family: str
    position: int
    changes: list[tuple[datetime, int, bool]] = field(default_factory=list)
    """(effective_at, position, withdrawn) in position order."""

    def withdrawn(self, at: datetime, as_of: int) -> bool:
        latest: tuple[datetime, int, bool] | None = None
        for change in self.changes:
            if change[1] <= as_of and change[0] <= at and (latest is None or change >= latest):
                latest = change
        return latest is not None and latest[2]


@dataclass(slots=True)
class EntitlementFacts:
    entitlement: str
    grantee_kind: str
    grantee: str
    selectors: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime | None
    position: int
    recorded_at: datetime
    revocations: list[tuple[datetime, int]] = field(default_factory=list)
    _covers: dict[str, bool] = field(default_factory=dict)

    def active(self, at: datetime, as_of: int) -> bool:
        if self.position > as_of or at < self.valid_from:
            return False
        if self.valid_until is not None and at >= self.valid_until:
            return False
        return not any(pos <= as_of and eff <= at for eff, pos in self.revocations)

    def covers(self, model: str, family: str) -> bool:
        return _covers(self.selectors, self._covers, model, family)


@dataclass(slots=True)
class Attestation:
    kind: str
    values: dict[str, frozenset[str]]
    """The attributes it gives: citizenship and residency, location, or employer."""
    valid_from: datetime
    valid_until: datetime | None
    position: int
    recorded_at: datetime
    source: str
    evidence: str | None

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.valid_from, self.position)

    def expired(self, at: datetime) -> bool:
        return self.valid_until is not None and at >= self.valid_until


@dataclass(slots=True)
class SubjectFacts:
    subject: str
    position: int
    attestations: dict[str, list[Attestation]] = field(default_factory=dict)
    """Per kind, sorted by (valid_from, position): the later one supersedes from its start."""
    revocations: dict[str, list[tuple[datetime, int]]] = field(default_factory=dict)
    entitlements: list[EntitlementFacts] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    """Every valid time at which one of this subject's facts starts or stops holding."""

    def attestation(self, kind: str, at: datetime, as_of: int) -> Attestation | None:
        """The attestation in force, or None when the attribute is unknown at `at`.

        An expired or revoked winner leaves the attribute unknown; it does not revive the
        attestation it superseded.
        """
        candidate = self.latest(kind, at, as_of)
        if candidate is None or candidate.expired(at):
            return None
        if self.revocation(kind, candidate, at, as_of) is not None:
            return None
        return candidate

    def latest(self, kind: str, at: datetime, as_of: int) -> Attestation | None:
        """The attestation that supersedes all others of `kind` valid by `at`, known at
        `as_of`, whether or not it still holds."""
        history = self.attestations.get(kind)
        if not history:
            return None
        for candidate in reversed(history):
            if candidate.valid_from <= at and candidate.position <= as_of:
                return candidate
        return None

    def revocation(
        self, kind: str, attestation: Attestation, at: datetime, as_of: int
    ) -> tuple[datetime, int] | None:
        """(effective_at, position) of a revocation that ends `attestation` by `at`, if any."""
        for effective_at, position in self.revocations.get(kind, ()):
            if attestation.position < position <= as_of and effective_at <= at:
                return effective_at, position
        return None


@dataclass(slots=True)
class DirectiveFacts:
    directive: str
    authority: str
    reference: str
    received_at: datetime
    effective_at: datetime
    position: int
    recorded_at: datetime
    base: dict[str, Any]
    """The terms as issued, in their stored form (see domain.terms), as the event holds them."""
    amendments: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)
    """(effective_at, position, the terms it changes in their stored form) of each amendment."""
    lift: tuple[datetime, int] | None = None
    _compiled: dict[tuple[int, ...], DirectiveTerms] = field(default_factory=dict)

    def terms(self, at: datetime, as_of: int) -> DirectiveTerms:
        """The terms in force at `at`: each amendment replaces what it carries from its start."""
        if not self.amendments:
            return self.terms_with(())
        applied = sorted(
            (a for a in self.amendments if a[1] <= as_of and a[0] <= at), key=lambda a: a[:2]
        )
        return self.terms_with(tuple(applied))

    def all_terms(self) -> list[DirectiveTerms]:
        """The terms as issued and as each amendment would make them on its own: together they
        hold every selector and predicate the directive has ever had."""
        return [self.terms_with(())] + [self.terms_with((a,)) for a in self.amendments]

    def terms_with(self, amendments: tuple[tuple[datetime, int, dict[str, Any]], ...]) -> (
        DirectiveTerms
    ):
        key = tuple(a[1] for a in amendments)
        terms = self._compiled.get(key)
        if terms is None:
            terms = DirectiveTerms.from_stored(self.base)
            for _, _, changes in amendments:
                terms = TermsChange.from_stored(changes).applied_to(terms)
            self._compiled[key] = terms
        return terms

    def active_terms(self, at: datetime, as_of: int) -> DirectiveTerms | None:
        """The terms when the directive is in force at `at` as known at `as_of`, else None."""
        if self.position > as_of or at < self.effective_at:
            return None
        if self.lift is not None and self.lift[1] <= as_of and self.lift[0] <= at:
            return None
        terms = self.terms(at, as_of)
        if terms.expires_at is not None and at >= terms.expires_at:
            return None
        return terms

    def scoping_terms(
        self, model: str, family: str, at: datetime, as_of: int
    ) -> DirectiveTerms | None:
        """The terms when the directive is in force at `at` and they cover `model`, else None."""
        terms = self.active_terms(at, as_of)
        return terms if terms is not None and terms.covers(model, family) else None


class FactBase:
    """All facts, indexed for lookups by subject, org and model."""

    def __init__(self) -> None:
        self.position = 0
        self.models: dict[str, ModelFacts] = {}
        self.subjects: dict[str, SubjectFacts] = {}
        self.entitlements: dict[str, EntitlementFacts] = {}
        self.org_entitlements: dict[str, list[EntitlementFacts]] = {}
        self.directives: dict[str, DirectiveFacts] = {}
        self._directives_by_model: dict[str, list[DirectiveFacts]] = {}
        self._names: dict[UUID, str] = {}
        """Aggregate id to the name it was created with (model, entitlement, subject...)."""
        self.global_times: list[datetime] = []
        """Valid times at which a fact concerning many subjects starts or stops holding."""
        self._value_sets: dict[tuple[tuple[str, frozenset[str]], ...], dict[str, frozenset[str]]]
        self._value_sets = {}
        self._moments: dict[datetime, datetime] = {}
        self._recorded: list[datetime] = []
        self._positions: list[int] = []

    def apply(self, event: Any, position: int) -> Concerns:
        """Adds one stored event and says whose decisions it may change."""
        if position <= self.position:
            raise ValueError(f"event at position {position} is not after {self.position}")
        self.position = position
        self._note_recorded(event.timestamp, position)
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
        return self._names[event.originator_id]

    def position_known_at(self, known_at: datetime) -> int:
        """The last position all of whose events had been recorded by `known_at`."""
        index = bisect_right(self._recorded, known_at)
        return self._positions[index - 1] if index else 0

    def recorded_at(self, position: int) -> datetime | None:
        index = bisect_right(self._positions, position)
        return self._recorded[index - 1] if index else None

    def validity(self, subject: str, at: datetime) -> tuple[datetime | None, datetime | None]:
        """The widest [start, end) around `at` in which no fact about `subject` changes."""
        start, end = _around(self.global_times, at)
        facts = self.subjects.get(subject)
        if facts is not None:
            s_start, s_end = _around(facts.times, at)
            if s_start is not None and (start is None or s_start > start):
                start = s_start
            if s_end is not None and (end is None or s_end < end):
                end = s_end
        return start, end

    def _note_recorded(self, recorded_at: datetime, position: int) -> None:
        if self._recorded and recorded_at < self._recorded[-1]:
            recorded_at = self._recorded[-1]
        self._recorded.append(recorded_at)
        self._positions.append(position)

    def _subject(self, subject: str, position: int) -> SubjectFacts:
        facts = self.subjects.get(subject)
        if facts is None:
            facts = self.subjects[subject] = SubjectFacts(subject, position)
        return facts

    def _model_registered(self, e: ModelVersion.Registered, position: int) -> Concerns:
        self._names[e.originator_id] = e.model
        self.models[e.model] = ModelFacts(e.model, e.family, position)
        self._directives_by_model.pop(e.model, None)
        return None

    def _model_changed(self, e: Any, position: int) -> Concerns:
        model = self.models[self._names[e.originator_id]]
        model.changes.append((e.effective_at, position, isinstance(e, ModelVersion.Withdrawn)))
        insort(self.global_times, e.effective_at)
        return None

    def _entitlement_granted(self, e: Entitlement.Granted, position: int) -> Concerns:
        facts = EntitlementFacts(
            e.entitlement, e.grantee_kind, e.grantee, tuple(e.models), e.valid_from,
            e.valid_until, position, e.timestamp,
        )
        self._names[e.originator_id] = e.entitlement
        self.entitlements[e.entitlement] = facts
        if e.grantee_kind == "org":
            self.org_entitlements.setdefault(e.grantee, []).append(facts)
            self._note_times(self.global_times, e.valid_from, e.valid_until)
            return None
        subject = self._subject(e.grantee, position)
        subject.entitlements.append(facts)
        self._note_times(subject.times, e.valid_from, e.valid_until)
        return (e.grantee,)

    def _entitlement_revoked(self, e: Entitlement.Revoked, position: int) -> Concerns:
        facts = self.entitlements[self._names[e.originator_id]]
        facts.revocations.append((e.effective_at, position))
        if facts.grantee_kind == "org":
            insort(self.global_times, e.effective_at)
            return None
        insort(self.subjects[facts.grantee].times, e.effective_at)
        return (facts.grantee,)

    def _subject_registered(self, e: Subject.Registered, position: int) -> Concerns:
        self._names[e.originator_id] = e.subject
        self._subject(e.subject, position)
        return (e.subject,)

    def _attested(self, e: Any, position: int) -> Concerns:
        subject = self.subjects[self._names[e.originator_id]]
        if isinstance(e, Subject.NationalityAttested):
            kind = NATIONALITY
            values = {
                "citizenship": frozenset(e.citizenships),
                "residency": frozenset(e.residencies),
            }
        elif isinstance(e, Subject.LocationAttested):
            kind, values = LOCATION, {"location": frozenset((e.country,))}
        else:
            kind, values = EMPLOYER, {"employer": frozenset((e.org,))}
        valid_from, valid_until = self._moment(e.valid_from), self._moment(e.valid_until)
        attestation = Attestation(
            kind, self._shared(values), valid_from, valid_until, position, e.timestamp,
            sys.intern(e.source), e.evidence,
        )
        history = subject.attestations.get(kind)
        if history is None:
            subject.attestations[kind] = [attestation]
        else:
            insort(history, attestation, key=lambda a: a.order)
        self._note_times(subject.times, valid_from, valid_until)
        return (subject.subject,)

    def _attestation_revoked(self, e: Subject.AttestationRevoked, position: int) -> Concerns:
        subject = self.subjects[self._names[e.originator_id]]
        subject.revocations.setdefault(e.kind, []).append((e.effective_at, position))
        insort(subject.times, e.effective_at)
        return (subject.subject,)

    def _directive_issued(self, e: Directive.Issued, position: int) -> Concerns:
        self._names[e.originator_id] = e.directive
        self._directives_by_model.clear()
        self.directives[e.directive] = DirectiveFacts(
            e.directive, e.authority, e.reference, e.received_at, e.effective_at, position,
            e.timestamp, dict(e.terms),
        )
        self._note_times(self.global_times, e.effective_at, e.expiry())
        return None

    def _directive_amended(self, e: Directive.Amended, position: int) -> Concerns:
        facts = self.directives[self._names[e.originator_id]]
        facts.amendments.append((e.effective_at, position, dict(e.terms)))
        self._directives_by_model.clear()
        self._note_times(self.global_times, e.effective_at, e.expiry())
        return None

    def _directive_lifted(self, e: Directive.Lifted, position: int) -> Concerns:
        facts = self.directives[self._names[e.originator_id]]
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


def _around(times: list[datetime], at: datetime) -> tuple[datetime | None, datetime | None]:
    index = bisect_right(times, at)
    return (times[index - 1] if index else None, times[index] if index < len(times) else None)


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
