"""The decision rule (docs/decision-rule.md), as a pure function over the fact base.

`decide(facts, subject, model, at, as_of, context)` uses only facts stored at positions up to
`as_of` and valid at `at`, and returns a decision that carries its reasons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from domain.facts import (
    ATTRIBUTE_KIND,
    EMPLOYER,
    DirectiveFacts,
    DirectiveTerms,
    FactBase,
    SubjectRecord,
)
from domain.predicates import AttributeLookup

MAX_ROUTE_HOPS = 3


class Reason(NamedTuple):
    code: str
    ref: str | None = None

    def sort_key(self) -> tuple[str, bool, str]:
        return (self.code, self.ref is not None, self.ref or "")

    def to_json(self) -> dict[str, str | None]:
        return {"code": self.code, "ref": self.ref}


def utc_iso(moment: datetime | None) -> str | None:
    """Timestamps in the normative JSON form: ISO-8601 in UTC."""
    return None if moment is None else moment.astimezone(UTC).isoformat()


def reasons_json(reasons: Iterable[Reason]) -> list[dict[str, str | None]]:
    """A decision's reasons as the normative JSON lists them."""
    return [reason.to_json() for reason in reasons]


def sorted_reasons(reasons: Any) -> tuple[Reason, ...]:
    """Deduplicated, sorted by (code, ref) with null first, so equal decisions are equal JSON."""
    unique = set(reasons)
    if len(unique) == 1:
        return tuple(unique)
    return tuple(sorted(unique, key=Reason.sort_key))


@dataclass(frozen=True, slots=True)
class Context:
    """What the request says about itself: where the subject is, and why it asks."""

    location: str | None = None
    purpose: str | None = None


NO_CONTEXT = Context()


class Verdict(NamedTuple):
    """A decision without its subject, model and time: what the cache keeps."""

    effect: str
    reasons: tuple[Reason, ...]
    route_to: str | None = None
    disclosed: bool = False

    def to_json(self) -> dict[str, Any]:
        """The decision JSON without subject, model and time (what compliance answers compare)."""
        return {"effect": self.effect, "route_to": self.route_to, "disclosed": self.disclosed,
                "reasons": reasons_json(self.reasons)}


_new_tuple = tuple.__new__


class Decision(NamedTuple):
    """May `subject` use `model`, with reasons. A tuple, because upstream services ask for
    millions of them and building one must cost next to nothing."""

    subject: str
    model: str
    effect: str
    route_to: str | None
    disclosed: bool
    reasons: tuple[Reason, ...]
    at: datetime
    as_of: int

    @classmethod
    def of(cls, subject: str, model: str, verdict: Verdict, at: datetime, as_of: int) -> Decision:
        return _new_tuple(cls, (  # the tuple itself: a cached decision costs a lookup and this
            subject, model, verdict.effect, verdict.route_to, verdict.disclosed, verdict.reasons,
            at, as_of,
        ))

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.effect, self.reasons, self.route_to, self.disclosed)

    def to_json(self) -> dict[str, Any]:
        """The normative decision JSON."""
        return self.json_with(reasons_json(self.reasons), self.at.astimezone(UTC).isoformat())

    def json_with(self, reasons: list[dict[str, str | None]], at: str) -> dict[str, Any]:
        """`to_json` given its reasons' JSON and its valid time already formatted, for encoders
        that share them between many decisions."""
        return {
            "subject": self.subject,
            "model": self.model,
            "effect": self.effect,
            "route_to": self.route_to,
            "disclosed": self.disclosed,
            "reasons": reasons,
            "at": at,
            "as_of": self.as_of,
        }


class _Attributes:
    """The subject's attribute values at one valid time and position, looked up on demand."""

    __slots__ = ("_as_of", "_at", "_context", "_subject", "_values", "facts")

    def __init__(
        self, subject: str, facts: SubjectRecord | None, at: datetime, as_of: int,
        context: Context,
    ) -> None:
        self._subject = subject
        self.facts = facts
        self._at = at
        self._as_of = as_of
        self._context = context
        self._values: dict[str, frozenset[str] | None] = {}

    def __call__(self, attribute: str) -> frozenset[str] | None:
        try:
            return self._values[attribute]
        except KeyError:
            value = self._values[attribute] = self._lookup(attribute)
            return value

    def _lookup(self, attribute: str) -> frozenset[str] | None:
        if attribute == "subject":
            return frozenset((self._subject,))
        if attribute == "purpose":
            purpose = self._context.purpose
            return None if purpose is None else frozenset((purpose,))
        if attribute == "location" and self._context.location is not None:
            return frozenset((self._context.location.upper(),))
        if self.facts is None:
            return None
        attestation = self.facts.attestation(ATTRIBUTE_KIND[attribute], self._at, self._as_of)
        return None if attestation is None else attestation.values[attribute]


def as_utc(moment: datetime) -> datetime:
    """Facts are kept in UTC; comparing datetimes of different offsets costs ten times more."""
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def attribute_lookup(
    facts: FactBase, subject: str, at: datetime, as_of: int, context: Context = NO_CONTEXT
) -> AttributeLookup:
    """The subject's attribute values exactly as `judge` looks them up, so that an explanation
    evaluates predicates node by node on the same values the decision used."""
    return _Attributes(subject, facts.records.get(subject), at, as_of, context)


def decide(
    facts: FactBase,
    subject: str,
    model: str,
    at: datetime,
    as_of: int | None = None,
    context: Context = NO_CONTEXT,
) -> Decision:
    """May `subject` use `model` at valid time `at`, as known at position `as_of`?"""
    position = facts.position if as_of is None or as_of > facts.position else as_of
    at = as_utc(at)
    return Decision.of(subject, model, judge(facts, subject, model, at, position, context), at,
                       position)


def judge(
    facts: FactBase, subject: str, model: str, at: datetime, as_of: int, context: Context
) -> Verdict:
    """The rule, following route directives from model to model."""
    attributes = _Attributes(subject, facts.records.get(subject), at, as_of, context)
    visited = [model]
    followed: list[tuple[str, bool, frozenset[str]]] = []
    current = model
    while True:
        verdict, route = _judge_one(facts, subject, current, at, as_of, attributes)
        if route is None:
            break
        directive, disclose, target, unknowns = route
        if target in visited or len(followed) == MAX_ROUTE_HOPS:
            return Verdict("deny", (Reason("route_cycle"),))
        followed.append((directive, disclose, unknowns))
        visited.append(target)
        current = target
    if not followed:
        return verdict
    if verdict.effect == "deny":
        return Verdict(
            "deny", sorted_reasons((*verdict.reasons, Reason("route_target_denied", current)))
        )
    reasons = [Reason("route", directive) for directive, _, _ in followed]
    reasons += [Reason("unknown_attribute", a) for _, _, unknowns in followed for a in unknowns]
    return Verdict("route", sorted_reasons(reasons), route_to=current, disclosed=followed[0][1])


_Route = tuple[str, bool, str, frozenset[str]]
"""(directive, disclose, route_to, unknown attributes it applied on)."""


def _judge_one(
    facts: FactBase,
    subject: str,
    model: str,
    at: datetime,
    as_of: int,
    attributes: _Attributes,
) -> tuple[Verdict, _Route | None]:
    """Steps 1-5 of the rule for one model; a route is returned rather than followed."""
    model_facts = facts.models.get(model)
    if model_facts is None or model_facts.position > as_of:
        return Verdict("deny", (Reason("unknown_model"),)), None
    if model_facts.changes and model_facts.withdrawn(at, as_of):
        return Verdict("deny", (Reason("model_withdrawn"),)), None
    family = model_facts.family

    entitled = []
    subject_facts = attributes.facts
    if subject_facts is not None:
        for entitlement in subject_facts.grants:
            if entitlement.active(at, as_of) and entitlement.covers(model, family):
                entitled.append(entitlement.entitlement)
    employer = attributes(EMPLOYER)
    if employer:
        for org in employer:
            for entitlement in facts.org_entitlements.get(org, ()):
                if entitlement.active(at, as_of) and entitlement.covers(model, family):
                    entitled.append(entitlement.entitlement)
    if not entitled:
        return Verdict("deny", (Reason("no_entitlement"),)), None

    denials: list[Reason] = []
    route: _Route | None = None
    route_order: tuple[datetime, str] | None = None
    for directive in facts.directives_for(model):
        terms = directive.scoping_terms(model, family, at, as_of)
        if terms is None or terms.exempts(subject, employer):
            continue
        truth, unknowns = terms.predicate.evaluate(attributes)
        if not terms.applies_on(truth):
            continue
        if terms.effect == "deny":
            denials.append(Reason("directive", directive.directive))
            denials.extend(Reason("unknown_attribute", a) for a in unknowns)
        elif route_order is None or route_key(directive) < route_order:
            route_order = route_key(directive)
            route = (directive.directive, terms.disclose, terms.route_to or "", unknowns)
    if denials:
        return Verdict("deny", sorted_reasons(denials)), None
    if route is not None:
        return Verdict("route", ()), route
    return Verdict("allow", sorted_reasons(Reason("entitled", e) for e in entitled)), None


def scope(
    facts: FactBase, model: str, family: str, at: datetime, as_of: int
) -> list[DirectiveFacts]:
    """The directives in force at `at`, as known at `as_of`, whose terms cover `model`: the
    only ones the rule weighs, and the ones a stale index fails closed for."""
    return [d for d in facts.directives_for(model) if d.scoping_terms(model, family, at, as_of)]


def route_key(directive: DirectiveFacts) -> tuple[datetime, str]:
    """Of several route directives that apply, the earliest in force wins, then the least id."""
    return (directive.effective_at, directive.directive)


class Finding(NamedTuple):
    """What the rule found for one directive, for one subject and model: `judge` acts on the
    same checks, stopping at the first that rules the directive out."""

    directive: DirectiveFacts
    terms: DirectiveTerms | None
    """The terms in force at `at`, as known at `as_of`; None when the directive is not."""
    covers: bool | None
    exempt: bool | None
    truth: bool | None
    unknowns: frozenset[str]
    """The attributes the predicate met unknown."""
    applies: bool


def find(
    directive: DirectiveFacts,
    subject: str,
    model: str,
    family: str,
    at: datetime,
    as_of: int,
    attributes: AttributeLookup,
) -> Finding:
    """Every check of the rule for one directive, none skipped (for an explanation)."""
    terms = directive.active_terms(at, as_of)
    if terms is None:
        return Finding(directive, None, None, None, None, frozenset(), False)
    covers = terms.covers(model, family)
    exempt = terms.exempts(subject, attributes(EMPLOYER))
    truth, unknowns = terms.predicate.evaluate(attributes)
    return Finding(directive, terms, covers, exempt, truth, unknowns,
                   covers and not exempt and terms.applies_on(truth))


def chosen_route(findings: list[Finding]) -> Finding | None:
    """The route directive the rule follows from these findings: none when a deny applies."""
    applying = [f for f in findings if f.applies]
    if not applying or any(f.terms is not None and f.terms.effect == "deny" for f in applying):
        return None
    return min(applying, key=lambda f: route_key(f.directive))
