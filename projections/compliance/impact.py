"""Impact of an issued directive and what-if for one not issued yet."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from domain.aggregates import Directive
from domain.application import Clock, system_clock
from domain.commands import CommandError, IssueDirective
from domain.decision import (
    Verdict,
    attribute_lookup,
)
from domain.facts import (
    DirectiveFacts,
    FactBase,
)
from domain.terms import DirectiveTerms
from projections.compliance.candidates import directive_candidates
from projections.compliance.views import _access, _judge, iso, load_view, verdict_json
from projections.reach import Reach
from projections.store_follower import Progress


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
    aggregate = Directive.issue(command.directive, command.authority, command.reference,
                                received, command.effective_at or received,
                                command.terms(), None, now)
    for event in aggregate.collect_events():
        view.index.apply(event, facts.position + 1)  # its reach indexes follow
    return replace(impact(facts, command.directive, view.reach), what_if=True)
