"""Compliance officer queries: history, impact (and what-if), diff and explain.

Every answer is computed by `domain.decision.judge` over the same fact base the access index
decides from; nothing here re-implements the rule. What this module adds is *which* decisions
to compare and how to say why they differ:

- **history** follows the decisions as they were actually made (see `history`);
- **impact** compares decisions at a directive's effective time as known just before and just
  after the position that issued it;
- **diff** compares decisions at two valid times as known at one position;
- **explain** lays out the facts one decision used, evaluating each predicate node by node with
  the very attribute lookup `judge` uses.

Candidate subjects come from `projections.reach.Reach` (entitled subjects per model, settled
attribute values per subject) when one is given, so a query looks at the subjects a change can
reach instead of everyone; without one it looks at everyone, which is slower and gives the same
answer. Reach knows the *current* facts, so its "surely not" is only trusted for a subject
whose settling attestation was already known and valid at the moment asked about (see
`directive_candidates`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from domain.aggregates import Directive, directive_key
from domain.application import Clock, system_clock
from domain.commands import CommandError, IssueDirective
from domain.decision import (
    MAX_ROUTE_HOPS,
    NO_CONTEXT,
    Context,
    Decision,
    Verdict,
    attribute_lookup,
    judge,
)
from domain.facts import (
    ATTRIBUTE_KIND,
    Attestation,
    DirectiveFacts,
    DirectiveTerms,
    EntitlementFacts,
    FactBase,
    SubjectFacts,
    selector_matches,
)
from domain.predicates import (
    AllOf,
    AnyOf,
    AttributeLookup,
    Everyone,
    Membership,
    Not,
    Predicate,
    UsPerson,
)
from projections.access_index import AccessIndex
from projections.enforcement import Enforcer
from projections.reach import Reach
from projections.store_follower import Progress, StoreFollower

INSTANT = timedelta(microseconds=1)


def iso(moment: datetime | None) -> str | None:
    """Timestamps in the normative JSON form: ISO-8601 in UTC."""
    return None if moment is None else moment.astimezone(UTC).isoformat()


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "effect": verdict.effect,
        "route_to": verdict.route_to,
        "disclosed": verdict.disclosed,
        "reasons": [reason.to_json() for reason in verdict.reasons],
    }


def _access(before: Verdict, after: Verdict) -> str | None:
    """`lost` / `gained` when the change crosses allow, as the kill switch counts it."""
    if (before.effect == "allow") == (after.effect == "allow"):
        return None
    return "gained" if after.effect == "allow" else "lost"


def _judge(facts: FactBase, subject: str, model: str, at: datetime, as_of: int) -> Verdict:
    return judge(facts, subject, model, at, as_of, NO_CONTEXT)


# ---------------------------------------------------------------------- a queryable view


@dataclass
class View:
    """An access index and the reach indexes over the same facts."""

    index: AccessIndex
    reach: Reach | None = None

    @property
    def facts(self) -> FactBase:
        return self.index.facts


def load_view(
    app: Application[UUID], until: int | None = None, progress: Progress | None = None
) -> View:
    """A private index with reach, replayed from the store (nothing is written anywhere)."""
    index = AccessIndex()
    enforcer = Enforcer(index)
    StoreFollower(app, index, enforcer).catch_up(until=until, progress=progress)
    return View(index, enforcer.reach)


# ------------------------------------------------------------------- facts as events


@dataclass(frozen=True, slots=True)
class FactEvent:
    """One stored fact as the fact base holds it: what happened, at which position."""

    position: int
    recorded_at: datetime | None
    event: str
    ref: str
    detail: dict[str, Any]
    boundaries: tuple[datetime, ...] = ()
    """Valid times at which what it says starts or stops holding."""

    def to_json(self) -> dict[str, Any]:
        return {"event": self.event, "ref": self.ref, "position": self.position,
                "recorded_at": iso(self.recorded_at), **self.detail}


def _times(*moments: datetime | None) -> tuple[datetime, ...]:
    return tuple(m for m in moments if m is not None)


def attestation_json(attestation: Attestation) -> dict[str, Any]:
    return {
        "kind": attestation.kind,
        "values": {name: sorted(values) for name, values in attestation.values.items()},
        "valid_from": iso(attestation.valid_from),
        "valid_until": iso(attestation.valid_until),
        "recorded_at": iso(attestation.recorded_at),
        "position": attestation.position,
        "source": attestation.source,
        "evidence": attestation.evidence,
    }


def entitlement_json(facts: FactBase, entitlement: EntitlementFacts) -> dict[str, Any]:
    return {
        "entitlement": entitlement.entitlement,
        "grantee": {entitlement.grantee_kind: entitlement.grantee},
        "models": list(entitlement.selectors),
        "valid_from": iso(entitlement.valid_from),
        "valid_until": iso(entitlement.valid_until),
        "recorded_at": iso(entitlement.recorded_at),
        "position": entitlement.position,
        "revocations": [
            {"effective_at": iso(at), "recorded_at": iso(facts.recorded_at(position)),
             "position": position}
            for at, position in entitlement.revocations
        ],
    }


def _employers(subject: SubjectFacts | None) -> list[str]:
    if subject is None:
        return []
    return sorted({org for a in subject.attestations.get("employer", ())
                   for org in a.values["employer"]})


def subject_entitlements(facts: FactBase, subject: str) -> list[EntitlementFacts]:
    """The subject's own grants and those of every org it was ever attested to work for."""
    found = facts.subjects.get(subject)
    own = list(found.entitlements) if found is not None else []
    return own + [e for org in _employers(found) for e in facts.org_entitlements.get(org, ())]


def subject_fact_events(facts: FactBase, subject: str) -> list[FactEvent]:
    """Every stored fact a decision about `subject` can depend on, in position order: its
    attestations and revocations, its and its employers' entitlements, every directive and
    every model."""
    recorded = facts.recorded_at
    events: list[FactEvent] = []
    for model in facts.models.values():
        events.append(FactEvent(model.position, recorded(model.position), "model_registered",
                                model.model, {"family": model.family}))
        for at, position, withdrawn in model.changes:
            events.append(FactEvent(
                position, recorded(position),
                "model_withdrawn" if withdrawn else "model_reinstated", model.model,
                {"effective_at": iso(at)}, (at,),
            ))
    found = facts.subjects.get(subject)
    if found is not None:
        for history in found.attestations.values():
            for a in history:
                events.append(FactEvent(
                    a.position, a.recorded_at, f"{a.kind}_attested", subject,
                    {k: v for k, v in attestation_json(a).items()
                     if k not in ("position", "recorded_at")},
                    _times(a.valid_from, a.valid_until),
                ))
        for kind, revocations in found.revocations.items():
            for at, position in revocations:
                events.append(FactEvent(position, recorded(position), "attestation_revoked",
                                        subject, {"kind": kind, "effective_at": iso(at)}, (at,)))
    for e in subject_entitlements(facts, subject):
        events.append(FactEvent(
            e.position, e.recorded_at, "entitlement_granted", e.entitlement,
            {"grantee": {e.grantee_kind: e.grantee}, "models": list(e.selectors),
             "valid_from": iso(e.valid_from), "valid_until": iso(e.valid_until)},
            _times(e.valid_from, e.valid_until),
        ))
        for at, position in e.revocations:
            events.append(FactEvent(position, recorded(position), "entitlement_revoked",
                                    e.entitlement, {"effective_at": iso(at)}, (at,)))
    for d in facts.directives.values():
        events.extend(directive_fact_events(facts, d))
    return sorted(events, key=lambda e: e.position)


def directive_fact_events(facts: FactBase, d: DirectiveFacts) -> list[FactEvent]:
    issued_terms = d.terms_with(())
    events = [FactEvent(
        d.position, d.recorded_at, "directive_issued", d.directive,
        {"authority": d.authority, "reference": d.reference, "received_at": iso(d.received_at),
         "effective_at": iso(d.effective_at), "expires_at": iso(issued_terms.expires_at)},
        _times(d.effective_at, issued_terms.expires_at),
    )]
    for amendment in d.amendments:
        at, position, changes = amendment
        expires = d.terms_with((amendment,)).expires_at if "expires_at" in changes else None
        events.append(FactEvent(position, facts.recorded_at(position), "directive_amended",
                                d.directive, {"effective_at": iso(at), "terms": changes},
                                _times(at, expires)))
    if d.lift is not None:
        at, position = d.lift
        events.append(FactEvent(position, facts.recorded_at(position), "directive_lifted",
                                d.directive, {"effective_at": iso(at)}, (at,)))
    return events


# ------------------------------------------------------------------------------ history


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one decision, and the stored fact that caused it."""

    subject: str
    model: str
    at: datetime
    """The valid time from which `after` holds."""
    as_of: int
    """The position the new decision is as known at."""
    kind: str
    """`recorded` (a fact became known) or `took_effect` (a known fact started or stopped
    holding)."""
    cause: FactEvent
    before: Verdict
    after: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "at": iso(self.at), "as_of": self.as_of, "kind": self.kind,
            "access": _access(self.before, self.after), "cause": self.cause.to_json(),
            "before": verdict_json(self.before), "after": verdict_json(self.after),
        }


def decision_changes(
    facts: FactBase, subject: str, model: str, events: Iterable[FactEvent] | None = None
) -> list[Change]:
    """Every change of the decision on (`subject`, `model`) *as it was made*: the decision at
    each moment τ with the facts known at τ, `judge(at=τ, as_of=known_at(τ))`.

    That answer changes only at a moment when either a relevant fact was recorded (compared at
    its recorded time τ, before and after its position: kind `recorded`) or the valid time of
    a fact already known came (an order effective later than it was recorded, an expiry:
    compared just before and at that moment, as known then: kind `took_effect`). Walking those
    moments in order and comparing each decision with the one before gives every change once.
    A late correction (a passport recorded at 17:40, valid since 1990) appears at 17:40, when
    it changed what was decided; the decisions it would have changed in the past are what
    `interlock decide --at` and `diff` show as known now.
    """
    steps: list[tuple[datetime, int, int, FactEvent, str]] = []
    for event in subject_fact_events(facts, subject) if events is None else events:
        if event.recorded_at is not None:
            steps.append((facts.recorded_at(event.position) or event.recorded_at,
                          event.position, 0, event, "recorded"))
        for moment in event.boundaries:
            known = facts.position_known_at(moment)
            if event.position <= known:
                steps.append((moment, known, 1, event, "took_effect"))
    steps.sort(key=lambda step: step[:3])
    if not steps:
        return []
    previous = _judge(facts, subject, model, steps[0][0], 0)
    changes = []
    for at, position, _, event, kind in steps:
        current = _judge(facts, subject, model, at, position)
        if current != previous:
            changes.append(Change(subject, model, at, position, kind, event, previous, current))
        previous = current
    return changes


@dataclass(frozen=True)
class History:
    subject: str
    as_of: int
    models: list[str]
    start: datetime | None
    end: datetime | None
    attestations: list[dict[str, Any]]
    revocations: list[dict[str, Any]]
    entitlements: list[dict[str, Any]]
    changes: list[Change]
    decisions: list[Decision]

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject, "as_of": self.as_of, "models": self.models,
            "from": iso(self.start), "to": iso(self.end),
            "attestations": self.attestations, "revocations": self.revocations,
            "entitlements": self.entitlements,
            "changes": [change.to_json() for change in self.changes],
            "decisions": [decision.to_json() for decision in self.decisions],
        }


def history(
    facts: FactBase,
    subject: str,
    model: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> History | None:
    """What is known about `subject` (each fact with valid time, recorded time, position,
    source and evidence) and every change of its decisions as they were made (see
    `decision_changes`) between `start` and `end`, per model; None for an unknown subject."""
    found = facts.subjects.get(subject)
    if found is None:
        return None
    models = sorted(facts.models) if model is None else [model]
    events = subject_fact_events(facts, subject)
    changes = [
        change
        for name in models
        for change in decision_changes(facts, subject, name, events)
        if (start is None or change.at >= start) and (end is None or change.at <= end)
    ]
    changes.sort(key=lambda c: (c.at, c.as_of, c.model))
    attestations = sorted((a for h in found.attestations.values() for a in h),
                          key=lambda a: a.position)
    revocations = sorted(
        ({"kind": kind, "effective_at": iso(at), "recorded_at": iso(facts.recorded_at(p)),
          "position": p} for kind, revs in found.revocations.items() for at, p in revs),
        key=lambda r: r["position"],
    )
    moment = now or datetime.now(UTC)
    return History(
        subject, facts.position, models, start, end,
        [attestation_json(a) for a in attestations], revocations,
        [entitlement_json(facts, e) for e in subject_entitlements(facts, subject)],
        changes,
        [Decision.of(subject, name, _judge(facts, subject, name, moment, facts.position),
                     moment, facts.position) for name in models],
    )


# ------------------------------------------------------------------- candidate subjects


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


# ------------------------------------------------------------------------------- impact


@dataclass(frozen=True, slots=True)
class ImpactRow:
    subject: str
    model: str
    group: str
    """`predicate` (the directive's predicate held) or `unknown_attribute` (it was unknown and
    the directive applies on unknown)."""
    unknown: tuple[str, ...]
    before: Verdict
    after: Verdict

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "model": self.model, "group": self.group,
                "unknown_attributes": list(self.unknown), "access": _access(self.before,
                                                                            self.after),
                "before": verdict_json(self.before), "after": verdict_json(self.after)}


@dataclass(frozen=True)
class Impact:
    directive: DirectiveFacts
    terms: DirectiveTerms
    at: datetime
    before: int
    after: int
    models: tuple[str, ...]
    compared: int
    subjects: int
    rows: list[ImpactRow]
    what_if: bool = False

    def groups(self) -> list[dict[str, Any]]:
        """Counts per reason group: the predicate held, or it was unknown (per attribute set)."""
        keyed: dict[tuple[str, tuple[str, ...]], list[ImpactRow]] = {}
        for row in self.rows:
            keyed.setdefault((row.group, row.unknown), []).append(row)
        return [
            {"group": group, "unknown_attributes": list(unknown), "pairs": len(rows),
             "subjects": len({r.subject for r in rows}),
             "by_model": dict(sorted(Counter(r.model for r in rows).items()))}
            for (group, unknown), rows in sorted(keyed.items())
        ]

    def to_json(self) -> dict[str, Any]:
        d = self.directive
        return {
            "directive": d.directive, "what_if": self.what_if, "authority": d.authority,
            "reference": d.reference, "received_at": iso(d.received_at),
            "effective_at": iso(d.effective_at), "recorded_at": iso(d.recorded_at),
            "position": d.position, "effect": self.terms.effect,
            "selectors": list(self.terms.selectors), "predicate": self.terms.predicate.to_data(),
            "on_unknown": self.terms.on_unknown,
            "compared": {"at": iso(self.at), "before": self.before, "after": self.after,
                         "models": list(self.models), "subjects": self.compared,
                         "of_subjects": self.subjects},
            "changed": {"pairs": len(self.rows),
                        "subjects": len({r.subject for r in self.rows}),
                        "by_model": dict(sorted(Counter(r.model for r in self.rows).items()))},
            "groups": self.groups(),
            "changes": [row.to_json() for row in self.rows],
        }


def impact(facts: FactBase, directive: str, reach: Reach | None = None) -> Impact:
    """Every (subject, model) whose decision at the directive's effective time differs between
    the position before it was issued and the position that issued it; raises KeyError for an
    unknown directive."""
    d = facts.directives[directive]
    at, after = d.effective_at, d.position
    before = after - 1
    if reach is None:
        subjects = set(facts.subjects)
        models = tuple(sorted(m for m, f in facts.models.items() if f.position <= after))
    else:
        subjects, models = directive_candidates(facts, reach, directive, before, at)
    terms = d.active_terms(at, after) or d.terms(at, after)
    rows = []
    for subject in sorted(subjects):
        for model in models:
            old = _judge(facts, subject, model, at, before)
            new = _judge(facts, subject, model, at, after)
            if old == new:
                continue
            truth, unknown = terms.predicate.evaluate(attribute_lookup(facts, subject, at, after))
            group = "unknown_attribute" if truth is None else "predicate"
            rows.append(ImpactRow(subject, model, group, tuple(sorted(unknown)), old, new))
    return Impact(d, terms, at, before, after, models, len(subjects), len(facts.subjects), rows)


def what_if(
    app: Application[UUID],
    command: IssueDirective,
    clock: Clock = system_clock,
    progress: Progress | None = None,
) -> Impact:
    """The impact a directive would have if it were issued now, on the current facts.

    The store is only read: its events are replayed into a throwaway index with reach, and the
    directive is added to that copy as the event the real aggregate (`Directive.issue`) would
    store, at the next position. Raises CommandError for a directive the store cannot take.
    """
    view = load_view(app, progress=progress)
    facts = view.facts
    if command.directive in facts.directives:
        raise CommandError("directive", f"{command.directive} is already issued; give the "
                           "what-if directive another name")
    for name, selectors in (("models", command.models), ("route_to", [command.route_to])):
        for selector in selectors:
            if selector and selector != "*" and not selector.startswith("family:") \
                    and selector not in facts.models:
                raise CommandError(name, f"unknown model {selector!r} (not registered)")
    now = clock()
    received = command.received_at or now
    terms = command.model_dump(  # the terms `CommandBatch._issue_directive` stores
        mode="json",
        include={"models", "subjects", "effect", "route_to", "disclose", "exempt", "on_unknown",
                 "expires_at"},
    )
    aggregate = Directive.issue(command.directive, command.authority, command.reference,
                                received, command.effective_at or received, terms, None, now)
    for event in aggregate.collect_events():
        view.index.apply(event, facts.position + 1)
        assert view.reach is not None
        view.reach.apply(event)
    return replace(impact(facts, command.directive, view.reach), what_if=True)


# --------------------------------------------------------------------------------- diff


@dataclass(frozen=True, slots=True)
class DiffRow:
    subject: str
    model: str
    before: Verdict
    after: Verdict

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "model": self.model,
                "before": verdict_json(self.before), "after": verdict_json(self.after)}


@dataclass(frozen=True)
class Diff:
    start: datetime
    end: datetime
    as_of: int
    models: list[str]
    compared: int
    subjects: int
    gained: list[DiffRow]
    lost: list[DiffRow]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": iso(self.start), "to": iso(self.end), "as_of": self.as_of,
            "models": self.models, "compared": {"subjects": self.compared,
                                                "of_subjects": self.subjects},
            "counts": {
                "gained": dict(sorted(Counter(r.model for r in self.gained).items())),
                "lost": dict(sorted(Counter(r.model for r in self.lost).items())),
            },
            "gained": [row.to_json() for row in self.gained],
            "lost": [row.to_json() for row in self.lost],
        }


def models_matching(facts: FactBase, selector: str | None) -> list[str]:
    """Registered models an exact id, `family:NAME` or `*` names (all when None)."""
    if selector is None:
        return sorted(facts.models)
    return sorted(name for name, m in facts.models.items()
                  if selector_matches(selector, name, m.family))


def diff(
    facts: FactBase,
    start: datetime,
    end: datetime,
    model: str | None = None,
    as_of: int | None = None,
    reach: Reach | None = None,
) -> Diff:
    """Who had access (an `allow`) at valid time `start` and not at `end`, or the reverse, as
    known at `as_of` (default: everything known), with the decisions at both times."""
    position = facts.position if as_of is None else min(as_of, facts.position)
    models = models_matching(facts, model)
    low, high = min(start, end), max(start, end)
    moving = moving_subjects(facts, reach, low, high, position, position)
    subjects = sorted(facts.subjects if moving is None else moving)
    gained, lost = [], []
    for subject in subjects:
        for name in models:
            before = _judge(facts, subject, name, start, position)
            after = _judge(facts, subject, name, end, position)
            access = _access(before, after)
            if access is not None:
                (gained if access == "gained" else lost).append(
                    DiffRow(subject, name, before, after))
    return Diff(start, end, position, models, len(subjects), len(facts.subjects), gained, lost)


# ------------------------------------------------------------------------------ explain


def explain_predicate(predicate: Predicate, lookup: AttributeLookup) -> dict[str, Any]:
    """The predicate tree, each node with its own three-valued result under `lookup`."""
    truth, unknown = predicate.evaluate(lookup)
    node: dict[str, Any] = {"truth": truth, "unknown": sorted(unknown)}
    if isinstance(predicate, AllOf | AnyOf):
        node["node"] = "all" if isinstance(predicate, AllOf) else "any"
        node["parts"] = [explain_predicate(part, lookup) for part in predicate.parts]
    elif isinstance(predicate, Not):
        node["node"] = "not"
        node["parts"] = [explain_predicate(predicate.part, lookup)]
    elif isinstance(predicate, Membership):
        actual = lookup(predicate.attribute)
        node.update(node=predicate.test, attribute=predicate.attribute,
                    values=sorted(predicate.values),
                    actual=None if actual is None else sorted(actual))
    elif isinstance(predicate, UsPerson):
        citizenship, residency = lookup("citizenship"), lookup("residency")
        node.update(node="us_person", expected=predicate.expected,
                    citizenship=None if citizenship is None else sorted(citizenship),
                    residency=None if residency is None else sorted(residency))
    elif isinstance(predicate, Everyone):
        node["node"] = "everyone"
    return node


def _why_unknown(subject: SubjectFacts | None, kind: str, at: datetime, as_of: int) -> str:
    """Why `SubjectFacts.attestation` found nothing in force (for the explanation only)."""
    history = [] if subject is None else subject.attestations.get(kind, [])
    known = [a for a in history if a.position <= as_of]
    if not known:
        return f"no {kind} attestation known at position {as_of}"
    valid = [a for a in known if a.valid_from <= at]
    if not valid:
        return f"no {kind} attestation valid yet (the first is valid from " \
               f"{iso(min(a.valid_from for a in known))})"
    latest = valid[-1]
    if latest.valid_until is not None and at >= latest.valid_until:
        return f"the {kind} attestation at position {latest.position} expired at " \
               f"{iso(latest.valid_until)}"
    assert subject is not None
    for effective_at, position in subject.revocations.get(kind, ()):
        if latest.position < position <= as_of and effective_at <= at:
            return f"the {kind} attestation at position {latest.position} was revoked from " \
                   f"{iso(effective_at)} (position {position})"
    return "unknown"


def explain_attributes(
    facts: FactBase, subject: str, at: datetime, as_of: int, context: Context
) -> dict[str, Any]:
    """Each attribute's value as the decision saw it, and the fact that gave it."""
    lookup = attribute_lookup(facts, subject, at, as_of, context)
    found = facts.subjects.get(subject)
    out: dict[str, Any] = {}
    for attribute in ("citizenship", "residency", "location", "employer"):
        value = lookup(attribute)
        entry: dict[str, Any] = {"values": None if value is None else sorted(value)}
        if attribute == "location" and context.location is not None:
            entry["from"] = "request context"
        else:
            kind = ATTRIBUTE_KIND[attribute]
            attestation = None if found is None else found.attestation(kind, at, as_of)
            entry["from"] = "attestation" if attestation is not None else None
            entry["attestation"] = None if attestation is None else attestation_json(attestation)
            if value is None:
                entry["why_unknown"] = _why_unknown(found, kind, at, as_of)
        out[attribute] = entry
    purpose = lookup("purpose")
    out["purpose"] = {"values": None if purpose is None else sorted(purpose),
                      "from": "request context" if purpose is not None else None}
    us = UsPerson(True).evaluate(lookup)[0]
    out["us_person"] = {"values": None if us is None else [str(us).lower()], "from": "derived"}
    return out


def _directive_explanation(
    facts: FactBase, d: DirectiveFacts, subject: str, model: str, family: str, at: datetime,
    as_of: int, lookup: AttributeLookup,
) -> dict[str, Any]:
    terms = d.active_terms(at, as_of)
    shown = terms or d.terms(at, as_of)
    out: dict[str, Any] = {
        "directive": d.directive, "authority": d.authority, "reference": d.reference,
        "effect": shown.effect, "route_to": shown.route_to, "models": list(shown.selectors),
        "received_at": iso(d.received_at), "effective_at": iso(d.effective_at),
        "expires_at": iso(shown.expires_at), "recorded_at": iso(d.recorded_at),
        "position": d.position, "on_unknown": shown.on_unknown,
    }
    if terms is None:
        if at < d.effective_at:
            why = f"not in force yet at {iso(at)}"
        elif d.lift is not None and d.lift[1] <= as_of and d.lift[0] <= at:
            why = f"lifted from {iso(d.lift[0])} (position {d.lift[1]})"
        else:
            why = f"expired at {iso(shown.expires_at)}"
        out.update(in_force=False, why=why, covers=None, exempt=None, predicate=None,
                   truth=None, applies=False)
        return out
    covers = terms.covers(model, family)
    employer = lookup("employer")
    exempt = subject in terms.exempt_subjects or bool(
        employer and not employer.isdisjoint(terms.exempt_orgs))
    tree = explain_predicate(terms.predicate, lookup)
    truth = tree["truth"]
    applies = covers and not exempt and (truth is True or (
        truth is None and terms.on_unknown == "apply"))
    out.update(in_force=True, why=None, covers=covers, exempt=exempt, predicate=tree,
               truth=truth, applies=applies)
    return out


def _explain_model(
    facts: FactBase, subject: str, model: str, at: datetime, as_of: int, context: Context
) -> dict[str, Any]:
    lookup = attribute_lookup(facts, subject, at, as_of, context)
    model_facts = facts.models.get(model)
    known = model_facts is not None and model_facts.position <= as_of
    out: dict[str, Any] = {
        "model": model,
        "registered": known,
        "family": model_facts.family if known and model_facts else None,
        "position": model_facts.position if known and model_facts else None,
        "withdrawn": bool(known and model_facts and model_facts.withdrawn(at, as_of)),
        "verdict": verdict_json(judge(facts, subject, model, at, as_of, context)),
        "entitlements": [],
        "directives": [],
    }
    if not known or model_facts is None:
        return out
    employer = lookup("employer") or frozenset()
    found = facts.subjects.get(subject)
    considered = list(found.entitlements) if found is not None else []
    considered += [e for org in sorted(employer) for e in facts.org_entitlements.get(org, ())]
    for e in considered:
        if e.position > as_of:
            continue
        active = e.active(at, as_of)
        covers = e.covers(model, model_facts.family)
        out["entitlements"].append({
            **entitlement_json(facts, e),
            "via": "subject" if e.grantee_kind == "subject" else "employer",
            "active": active, "covers": covers, "matched": active and covers,
        })
    for d in facts.directives.values():
        if d.position <= as_of:
            out["directives"].append(_directive_explanation(
                facts, d, subject, model, model_facts.family, at, as_of, lookup))
    return out


def explain(
    facts: FactBase,
    subject: str,
    model: str,
    at: datetime,
    as_of: int | None = None,
    known_at: datetime | None = None,
    context: Context = NO_CONTEXT,
) -> dict[str, Any]:
    """The decision and the facts it used: each attribute's attestation, each entitlement
    considered, each directive known with its predicate evaluated node by node, and every model
    a route led to."""
    position = facts.position if as_of is None else min(as_of, facts.position)
    if known_at is not None:
        position = min(position, facts.position_known_at(known_at))
    decision = Decision.of(subject, model, judge(facts, subject, model, at, position, context),
                           at, position)
    steps = [_explain_model(facts, subject, model, at, position, context)]
    seen = {model}
    while len(steps) <= MAX_ROUTE_HOPS:
        routes = [d for d in steps[-1]["directives"] if d["applies"]]
        if any(d["effect"] == "deny" for d in routes) or not routes:
            break
        if not any(e["matched"] for e in steps[-1]["entitlements"]) or steps[-1]["withdrawn"]:
            break
        chosen = min(routes, key=lambda d: (d["effective_at"], d["directive"]))
        target = chosen["route_to"]
        steps[-1]["route"] = {"directive": chosen["directive"], "to": target}
        if target in seen:
            break
        seen.add(target)
        steps.append(_explain_model(facts, subject, target, at, position, context))
    return {
        "decision": decision.to_json(),
        "at": iso(at), "as_of": position, "known_at": iso(known_at),
        "context": {"location": context.location, "purpose": context.purpose},
        "subject": {"subject": subject, "known": subject in facts.subjects,
                    "attributes": explain_attributes(facts, subject, at, position, context)},
        "models": steps,
    }


# ---------------------------------------------------------------------- the order report


@dataclass(frozen=True)
class SeriesPoint:
    at: datetime
    decided: dict[str, int]
    """Subjects with access per model, as decided then (known at that moment)."""
    known_now: dict[str, int]
    """The same, as known now."""


@dataclass
class OrderReport:
    """What `interlock.report` renders: the order's timeline, access over time around it, its
    impact, and the unknowns still open."""

    impact: Impact
    now: datetime
    position: int
    subjects: int
    models: list[str]
    timeline: list[dict[str, Any]]
    series: list[SeriesPoint]
    unknowns: list[dict[str, Any]]
    restored: dict[str, int]
    """Of the pairs the order cut off, how many have access now (per model)."""
    chain_head: tuple[int, str] | None = None
    enforcement: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "directive": self.impact.directive.directive, "now": iso(self.now),
            "position": self.position, "subjects": self.subjects, "models": self.models,
            "timeline": self.timeline,
            "series": [{"at": iso(p.at), "decided": p.decided, "known_now": p.known_now}
                       for p in self.series],
            "impact": self.impact.to_json(), "unknowns": self.unknowns,
            "restored": self.restored,
            "chain_head": None if self.chain_head is None else {
                "position": self.chain_head[0], "link": self.chain_head[1]},
            "enforcement": self.enforcement,
        }


def access_series(
    facts: FactBase, reach: Reach | None, times: list[datetime], models: list[str]
) -> list[SeriesPoint]:
    """How many subjects had access to each model at each valid time, as decided then and as
    known now. Only subjects whose decision can move inside the window are judged at each
    time; the others are counted once."""
    if not times:
        return []
    low, high = min(times), max(times)
    first, last = facts.position_known_at(low), facts.position
    moving = moving_subjects(facts, reach, low, high, first, last)
    moving_list = sorted(facts.subjects if moving is None else moving)
    steady = Counter[str]()
    if moving is not None:
        for subject in facts.subjects:
            if subject not in moving:
                for model in models:
                    if _judge(facts, subject, model, low, first).effect == "allow":
                        steady[model] += 1
    points = []
    for at in times:
        counts = []
        for as_of in (min(facts.position_known_at(at), last), last):
            count = Counter(steady)
            for subject in moving_list:
                for model in models:
                    if _judge(facts, subject, model, at, as_of).effect == "allow":
                        count[model] += 1
            counts.append({model: count[model] for model in models})
        points.append(SeriesPoint(at, counts[0], counts[1]))
    return points


def open_unknowns(
    facts: FactBase, reach: Reach | None, directive: str, now: datetime
) -> list[dict[str, Any]]:
    """Subjects the directive denies now only because an attribute is unknown."""
    position = facts.position
    if reach is None:
        subjects: Iterable[str] = facts.subjects
        models: Iterable[str] = sorted(facts.models)
    else:
        subjects, models = directive_candidates(facts, reach, directive, position, now)
    open_: dict[str, dict[str, Any]] = {}
    cited = ("directive", directive)
    for subject in sorted(subjects):
        for model in models:
            verdict = _judge(facts, subject, model, now, position)
            if verdict.effect != "deny" or cited not in verdict.reasons:
                continue
            unknown = [r.ref for r in verdict.reasons if r.code == "unknown_attribute"]
            if not unknown:
                continue
            entry = open_.setdefault(subject, {
                "subject": subject, "models": [], "unknown_attributes": set(),
                "employer": _employers(facts.subjects.get(subject)),
            })
            entry["models"].append(model)
            entry["unknown_attributes"].update(unknown)
    return [{**e, "unknown_attributes": sorted(e["unknown_attributes"])}
            for e in open_.values()]


def order_report(
    view: View,
    directive: str,
    now: datetime | None = None,
    before: timedelta = timedelta(minutes=30),
    after: timedelta = timedelta(minutes=60),
    points: int = 31,
    enforcement: list[dict[str, Any]] | None = None,
    chain_head: tuple[int, str] | None = None,
) -> OrderReport:
    """The data of an order's report (raises KeyError for an unknown directive). Its figures
    "now" are decisions at valid time `now` (default: the moment the report is made) with
    everything known."""
    facts, reach = view.facts, view.reach
    moment = now or datetime.now(UTC)
    result = impact(facts, directive, reach)
    d = result.directive
    models = sorted(facts.models)
    recorded = d.recorded_at
    start = min(d.received_at, d.effective_at) - before
    end = max(recorded, d.effective_at) + after
    times = {start + (end - start) * i / (points - 1) for i in range(points)}
    for key in (d.effective_at, recorded):
        times |= {key - INSTANT, key}
    for burst in _bursts(facts, start, end, gap=(end - start) / points):
        times |= {burst - INSTANT, burst}
    series = access_series(facts, reach, sorted(t for t in times if start <= t <= end), models)
    restored = Counter(row.model for row in result.rows
                       if _judge(facts, row.subject, row.model, moment,
                                 facts.position).effect == "allow")
    report = OrderReport(
        result, moment, facts.position, len(facts.subjects), models,
        _timeline(facts, d, result, enforcement), series,
        open_unknowns(facts, reach, directive, moment),
        {model: restored[model] for model in models}, chain_head,
    )
    if enforcement is not None:
        report.enforcement = _enforcement_summary(d, enforcement)
    return report


def _bursts(facts: FactBase, start: datetime, end: datetime, gap: timedelta,
            limit: int = 200_000) -> list[datetime]:
    """The first and last recorded time of each burst of events inside the window, so that a
    chart sampled at a few times still shows when recorded facts changed decisions."""
    first, last = facts.position_known_at(start), facts.position_known_at(end)
    if last - first > limit:
        return []
    moments: list[datetime] = []
    previous: datetime | None = None
    for position in range(first + 1, last + 1):
        recorded = facts.recorded_at(position)
        if recorded is None or recorded == previous:
            continue
        if previous is None or recorded - previous > gap:
            if previous is not None:
                moments.append(previous)
            moments.append(recorded)
        previous = recorded
    if previous is not None:
        moments.append(previous)
    return moments


_ORDER = {"received": 0, "effective": 1, "recorded": 2, "enforced": 3}


def _timeline(
    facts: FactBase, d: DirectiveFacts, result: Impact, enforcement: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    switched = max(d.recorded_at, d.effective_at)
    rows: list[dict[str, Any]] = [
        {"at": iso(d.received_at), "what": "received",
         "detail": f"from {d.authority or 'the authority'}"
                   + (f" ({d.reference})" if d.reference else "")},
        {"at": iso(d.recorded_at), "what": "recorded",
         "detail": f"stored at position {d.position:,}"},
        {"at": iso(d.effective_at), "what": "effective",
         "detail": "the order's valid time starts"},
    ]
    summary = _enforcement_summary(d, enforcement) if enforcement is not None else None
    if summary and summary["records"]:
        rows.append({"at": summary["first_emitted_at"], "what": "enforced",
                     "detail": f"first of {summary['records']} access_revoked records emitted "
                               "by the enforcer",
                     "times": {"last": summary["last_emitted_at"]}})
    else:
        rows.append({"at": iso(switched), "what": "enforced",
                     "detail": f"decisions switched for {len(result.rows):,} (subject, model) "
                               "pairs when the index applied the order (the later of recorded "
                               "and effective); no enforcement log was given"})
    for event in directive_fact_events(facts, d)[1:]:
        rows.append({"at": iso(event.recorded_at), "what": event.event.removeprefix("directive_"),
                     "detail": f"position {event.position:,}",
                     "times": {"effective": event.detail.get("effective_at")}})
    return sorted(rows, key=lambda r: (r["at"] or "", _ORDER.get(r["what"], 9)))


def _enforcement_summary(d: DirectiveFacts, records: list[dict[str, Any]] | None) -> dict[
    str, Any
]:
    mine = [r for r in records or () if r.get("position") == d.position]
    emitted = sorted(str(r["emitted_at"]) for r in mine if r.get("emitted_at"))
    return {"records": len(mine), "first_emitted_at": emitted[0] if emitted else None,
            "last_emitted_at": emitted[-1] if emitted else None}


def load_enforcement_log(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The embedded enforcer's JSON-lines file (`revocation_file`)."""
    import json

    return [json.loads(line) for line in lines if line.strip()]

