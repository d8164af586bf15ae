"""Which subjects and models a change can reach, so a query need not judge everyone."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import datetime

from eventsourcing.utils import get_topic

from domain.aggregates import Directive, directive_key
from domain.facts import (
    ATTRIBUTE_KIND,
    DirectiveFacts,
    FactBase,
)
from domain.predicates import (
    AllOf,
    AnyOf,
    Membership,
    Not,
    Predicate,
    UsPerson,
)
from projections.compliance.views import directive_fact_events
from projections.reach import Reach


def predicate_attributes(predicate: Predicate) -> set[str]:
    """The attributes a predicate reads, as it names them (`us_person` included)."""
    if isinstance(predicate, AllOf | AnyOf):
        return set().union(*(predicate_attributes(p) for p in predicate.parts))
    if isinstance(predicate, Not):
        return predicate_attributes(predicate.part)
    if isinstance(predicate, Membership):
        return {predicate.attribute}
    if isinstance(predicate, UsPerson):
        return {"us_person"}
    return set()


def _kinds(attributes: Iterable[str]) -> set[str]:
    return {"nationality" if a == "us_person" else ATTRIBUTE_KIND[a]
            for a in attributes if a == "us_person" or a in ATTRIBUTE_KIND}


def issued_event(d: DirectiveFacts) -> Directive.Issued:
    """The directive's Issued event as the fact base knows it (what `Reach.pairs` reads)."""
    return Directive.Issued(
        originator_id=directive_key(d.directive), originator_version=1,
        timestamp=d.recorded_at, originator_topic=get_topic(Directive),
        directive=d.directive, authority=d.authority, reference=d.reference,
        received_at=d.received_at, effective_at=d.effective_at, terms=d.base, signed_by=None,
    )


def directive_candidates(
    facts: FactBase, reach: Reach, directive: str, known_by: int, earliest: datetime
) -> tuple[set[str], tuple[str, ...]]:
    """The subjects the directive may apply to, and the models it may affect, at any valid
    time from `earliest` on, as known at any position from `known_by` on.

    `Reach.pairs` leaves out subjects whose settled attributes make every version of the
    predicate false. A settled value is only a safe reason if it was already known at
    `known_by` and valid at `earliest`; the rest are added back.
    """
    d = facts.directives[directive]
    subjects: set[str] = set()
    models: tuple[str, ...] = ()
    for subject, reached in reach.pairs(issued_event(d)):
        subjects.add(subject)
        models = reached
    kinds = _kinds(a for terms in d.all_terms() for a in predicate_attributes(terms.predicate))
    for kind in kinds:
        for subject in reach.settled.get(kind, ()):
            if subject in subjects:
                continue
            (only, *_) = facts.subjects[subject].attestations[kind]
            if only.position > known_by or only.valid_from > earliest:
                subjects.add(subject)
    return subjects, models or tuple(sorted(facts.models))


def _within(times: list[datetime], low: datetime, high: datetime) -> bool:
    index = bisect_right(times, low)
    return index < len(times) and times[index] <= high


def moving_subjects(
    facts: FactBase, reach: Reach | None, low: datetime, high: datetime, first: int, last: int
) -> set[str] | None:
    """Subjects whose decision (any model, no request context) may differ between any two
    points (t, p) with low ≤ t ≤ high and first ≤ p ≤ last; None when anyone's may.

    A decision only changes where a relevant fact is recorded or starts or stops holding, so
    a subject moves when one of its own facts (or its employer's grant) does, or when a
    directive does that may apply to it.
    """
    if reach is None:
        return None

    def recorded(position: int) -> bool:
        return first < position <= last

    def inside(moment: datetime | None) -> bool:
        return moment is not None and low < moment <= high

    for model in facts.models.values():
        if recorded(model.position) or any(recorded(p) or inside(at)
                                           for at, p, _ in model.changes):
            return None
    moving: set[str] = set()
    for e in facts.entitlements.values():
        if (recorded(e.position) or inside(e.valid_from) or inside(e.valid_until)
                or any(recorded(p) or inside(at) for at, p in e.revocations)):
            if e.grantee_kind == "org":
                moving |= reach.employees.get(e.grantee, set())
            else:
                moving.add(e.grantee)
    for d in facts.directives.values():
        events = directive_fact_events(facts, d)
        if any(recorded(e.position) or any(inside(b) for b in e.boundaries) for e in events):
            moving |= directive_candidates(facts, reach, d.directive, first, low)[0]
    for name, subject in facts.subjects.items():
        if name in moving:
            continue
        if (_within(subject.times, low, high)
                or any(recorded(a.position) for h in subject.attestations.values() for a in h)
                or any(recorded(p) for revs in subject.revocations.values() for _, p in revs)):
            moving.add(name)
    return moving
