"""Which (subject, model) pairs an event can change, found without scanning every subject.

It indexes entitled subjects per model selector and, per attribute value, the subjects whose
value can no longer change without a new event ("settled"). A directive's predicate is then
turned into set algebra over those indexes, giving a superset of the subjects it may apply to:
settled subjects for whom it is surely false are left out; everyone else is a candidate.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Set
from itertools import repeat
from typing import Any

from domain.aggregates import CommandReceipt, Directive, Entitlement, ModelVersion, Subject
from domain.decision import MAX_ROUTE_HOPS
from domain.facts import (
    ATTRIBUTE_KIND,
    EMPLOYER,
    NATIONALITY,
    DirectiveFacts,
    FactBase,
    selector_matches,
)
from domain.predicates import AllOf, AnyOf, Membership, Not, Predicate, UsPerson
from domain.subjects import Profile, Stated
from projections.access_index import AccessIndex

_SUBJECT_EVENTS = (
    Subject.Registered, Subject.NationalityAttested, Subject.LocationAttested,
    Subject.EmployerAttested, Subject.AttestationRevoked,
)
_ATTESTED = {
    Subject.NationalityAttested: "nationality",
    Subject.LocationAttested: "location",
    Subject.EmployerAttested: "employer",
}
_WIDENING = (Entitlement.Granted, Subject.EmployerAttested, ModelVersion.Registered)
"""Events that can add to the subjects entitled to a model."""
_KIND_ATTRIBUTES = {
    "nationality": ("citizenship", "residency"),
    "location": ("location",),
    "employer": ("employer",),
}


class Reach:
    """Candidate indexes over the fact base; fed the same events, after the fact base."""

    def __init__(self, facts: FactBase) -> None:
        self.facts = facts
        self.granted: dict[str, set[str]] = {}
        """Selector to the subjects holding a personal grant for it."""
        self.granted_orgs: dict[str, set[str]] = {}
        """Selector to the orgs holding a grant for it."""
        self.employees: dict[str, set[str]] = {}
        """Org to every subject ever attested as its employee."""
        self.settled: dict[str, set[str]] = {kind: set() for kind in _KIND_ATTRIBUTES}
        """Attestation kind to the subjects whose value for it is fixed from its recording on:
        one attestation, valid from before it was recorded, never expiring, never revoked."""
        self.settled_values: dict[str, dict[str, set[str]]] = {
            attribute: {} for attribute in ATTRIBUTE_KIND
        }
        """Attribute to value to the settled subjects holding it."""
        self._settled_on: dict[tuple[str, str], Stated] = {}
        self.read_kinds: frozenset[str] = frozenset((EMPLOYER,))
        """The attestation kinds any directive's predicate reads, and the employer (which
        every decision reads): what the rule may look at of a subject's attestations."""
        self._entitled_to: dict[tuple[str, ...], set[str]] = {}
        self.named: set[str] = set()
        """Subjects a directive names (exempts, or tests by `subject`): each is judged on its
        own, never as one of a class of subjects whose facts are alike."""

    @classmethod
    def following(cls, index: AccessIndex) -> Reach:
        """Reach indexes over `index`'s fact base, fed every event the index applies from now
        on; an index that holds events already (restored from a snapshot) has them read from
        its facts first (`of`)."""
        reach = cls.of(index.facts) if index.position else cls(index.facts)
        index.subscribe(lambda applied: reach.apply(applied.event))
        return reach

    @classmethod
    def of(cls, facts: FactBase) -> Reach:
        """The indexes that feeding every event of `facts` would have built, read from the
        facts themselves: a fresh enforcer started from a snapshot has no events to feed.
        Subjects alike (one profile) are settled and employed alike, so each profile is read
        once."""
        reach = cls(facts)
        for entitlement in facts.entitlements.values():
            index = reach.granted if entitlement.grantee_kind == "subject" else reach.granted_orgs
            for selector in entitlement.selectors:
                index.setdefault(selector, set()).add(entitlement.grantee)
        for profile in facts.profiles.held():
            members = profile.members
            for fact in profile.facts:
                if type(fact) is Stated and fact.kind == EMPLOYER:
                    for org in fact.values["employer"]:
                        reach.employees.setdefault(org, set()).update(members)
            for kind in profile.history:
                fixed = _fixed(profile, kind)
                if fixed is None:
                    continue
                reach.settled[kind].update(members)
                for attribute, values in fixed.values.items():
                    for value in values:
                        reach.settled_values[attribute].setdefault(value, set()).update(members)
                reach._settled_on.update(zip(zip(members, repeat(kind)), repeat(fixed)))
        for directive in facts.directives.values():
            reach._directed(directive)
        return reach

    def apply(self, event: Any) -> None:
        """Updates the indexes for an event the fact base has just taken."""
        kind = type(event)
        if kind in _WIDENING:
            self._entitled_to.clear()
        if kind is Entitlement.Granted:
            index = self.granted if event.grantee_kind == "subject" else self.granted_orgs
            for selector in event.models:
                index.setdefault(selector, set()).add(event.grantee)
        elif kind in _ATTESTED:
            subject = self.facts.name_of(event)
            if kind is Subject.EmployerAttested:
                self.employees.setdefault(event.org, set()).add(subject)
            self._settle(subject, _ATTESTED[kind])
        elif kind is Subject.AttestationRevoked:
            self._settle(self.facts.name_of(event), event.kind)
        elif kind is Directive.Issued or kind is Directive.Amended:
            self._directed(self.facts.directives[self.facts.name_of(event)])

    def _directed(self, directive: DirectiveFacts) -> None:
        """Notes the subjects a directive names and the attestation kinds it reads, in every
        version of its terms."""
        for terms in directive.all_terms():
            self.named |= terms.exempt_subjects | _named(terms.predicate)
            self.read_kinds |= _kinds_read(terms.predicate)

    def pairs(self, event: Any) -> Iterator[tuple[str, tuple[str, ...]]]:
        """(subject, models) whose decisions the event, just applied, may have changed."""
        for subjects, models in self.reached(event):
            for subject in subjects:
                yield subject, models

    def reached(self, event: Any) -> list[tuple[Collection[str], tuple[str, ...]]]:
        """`pairs` as (subjects, models): the subjects reached, with the models each may have
        had a decision changed for (sets that may be the indexes' own: read them, never
        change them)."""
        facts = self.facts
        if isinstance(event, CommandReceipt.Received):
            return []
        if isinstance(event, _SUBJECT_EVENTS):
            return [((facts.name_of(event),), tuple(facts.models))]
        if isinstance(event, Entitlement.Granted | Entitlement.Revoked):
            entitlement = facts.entitlements[facts.name_of(event)]
            models = self._reaching(self._covered(entitlement.selectors))
            if entitlement.grantee_kind == "subject":
                return [((entitlement.grantee,), models)]
            return [(self.employees.get(entitlement.grantee, set()), models)]
        if isinstance(event, ModelVersion.Registered | ModelVersion.Withdrawn
                      | ModelVersion.Reinstated):
            models = self._reaching({facts.name_of(event)})
            return [(self._entitled(models), models)]
        if isinstance(event, Directive.Issued | Directive.Amended | Directive.Lifted):
            directive = facts.directives[facts.name_of(event)]
            versions = directive.all_terms()
            models = self._reaching(
                set().union(*(self._covered(terms.selectors) for terms in versions))
            )
            entitled = self._entitled(models)
            reached = [self.maybe(terms.predicate, entitled) for terms in versions]
            candidates = reached[0] if len(reached) == 1 else set().union(*reached)
            return [(candidates, models)]
        return []

    def maybe(self, predicate: Predicate, among: set[str]) -> set[str]:
        """The subjects of `among` for whom `predicate` may be true or unknown."""
        if isinstance(predicate, AllOf):
            result = among
            for part in predicate.parts:
                result = self.maybe(part, result)
            return result
        if isinstance(predicate, AnyOf):
            return set().union(*(self.maybe(part, among) for part in predicate.parts))
        if isinstance(predicate, Membership):
            return self._maybe_member(predicate, among)
        if isinstance(predicate, UsPerson):
            us = self._holding("citizenship", ("US",)) | self._holding("residency", ("US",))
            if predicate.expected:
                return among - (self.settled["nationality"] - us)
            return among - us
        return set(among)

    def _maybe_member(self, test: Membership, among: set[str]) -> set[str]:
        if test.attribute == "subject":
            return among & test.values if test.test == "any_of" else among - test.values
        kind = ATTRIBUTE_KIND.get(test.attribute)
        if kind is None:
            return set(among)
        holding = self._holding(test.attribute, test.values)
        if test.test == "any_of":
            return among - (self.settled[kind] - holding)
        return among - holding

    def _holding(self, attribute: str, values: Collection[str]) -> Set[str]:
        """The settled subjects holding one of `values` (for one value, the index's own set,
        not copied: read it, never change it)."""
        index = self.settled_values[attribute]
        if len(values) == 1:
            (value,) = values
            return index.get(value, frozenset())
        return set().union(*(index.get(value, ()) for value in values))

    def _settle(self, subject: str, kind: str) -> None:
        profile = self.facts.records[subject].profile
        previous = self._settled_on.pop((subject, kind), None)
        if previous is not None:
            self.settled[kind].discard(subject)
            for attribute, values in previous.values.items():
                for value in values:
                    self.settled_values[attribute][value].discard(subject)
        only = _fixed(profile, kind)
        if only is None:
            return
        self._settled_on[subject, kind] = only
        self.settled[kind].add(subject)
        for attribute, values in only.values.items():
            for value in values:
                self.settled_values[attribute].setdefault(value, set()).add(subject)

    def _covered(self, selectors: Iterable[str]) -> set[str]:
        return {
            model for model, facts in self.facts.models.items()
            if any(selector_matches(s, model, facts.family) for s in selectors)
        }

    def _reaching(self, models: set[str]) -> tuple[str, ...]:
        """`models` and every model whose route directives may lead to one of them."""
        reached = set(models)
        for _ in range(MAX_ROUTE_HOPS):
            more = {
                model
                for directive in self.facts.directives.values()
                for terms in directive.all_terms()
                if terms.effect == "route" and terms.route_to in reached
                for model in self._covered(terms.selectors)
            }
            if more <= reached:
                break
            reached |= more
        return tuple(sorted(reached))

    def _entitled(self, models: Iterable[str]) -> set[str]:
        """Subjects who hold, or whose org holds, a grant whose selector names one of `models`
        (remembered until a grant, an employer or a model is added: read it, never change it)."""
        key = tuple(models)
        found = self._entitled_to.get(key)
        if found is None:
            found = self._entitled_to[key] = self._entitled_now(key)
        return found

    def _entitled_now(self, models: tuple[str, ...]) -> set[str]:
        subjects: set[str] = set()
        for model in models:
            model_facts = self.facts.models.get(model)
            if model_facts is None:
                continue
            for selector in (model, f"family:{model_facts.family}", "*"):
                subjects |= self.granted.get(selector, set())
                for org in self.granted_orgs.get(selector, ()):
                    subjects |= self.employees.get(org, set())
        return subjects


def _fixed(profile: Profile, kind: str) -> Stated | None:
    """The attestation of `kind` that fixes the subject's value from its recording on (one
    attestation, valid from before it was recorded, never expiring, never revoked), if any."""
    history = profile.history.get(kind, ())
    if len(history) != 1 or profile.withdrawals.get(kind):
        return None
    ((only, _),) = history
    if only.valid_until is not None or only.ahead:
        return None
    return only


def _named(predicate: Predicate) -> frozenset[str]:
    """The subjects a predicate names by `subject`."""
    if isinstance(predicate, AllOf | AnyOf):
        return frozenset().union(*(_named(part) for part in predicate.parts))
    if isinstance(predicate, Not):
        return _named(predicate.part)
    if isinstance(predicate, Membership) and predicate.attribute == "subject":
        return predicate.values
    return frozenset()


def _kinds_read(predicate: Predicate) -> frozenset[str]:
    """The attestation kinds a predicate reads."""
    if isinstance(predicate, AllOf | AnyOf):
        return frozenset().union(*(_kinds_read(part) for part in predicate.parts))
    if isinstance(predicate, Not):
        return _kinds_read(predicate.part)
    if isinstance(predicate, UsPerson):
        return frozenset((NATIONALITY,))
    if isinstance(predicate, Membership) and predicate.attribute in ATTRIBUTE_KIND:
        return frozenset((ATTRIBUTE_KIND[predicate.attribute],))
    return frozenset()
