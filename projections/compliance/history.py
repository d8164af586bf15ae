"""A subject's history: every change of its decisions as they were made, and the facts
behind them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.decision import (
    Decision,
    Verdict,
)
from domain.facts import (
    FactBase,
)
from projections.compliance.views import (
    FactEvent,
    _access,
    _judge,
    attestation_json,
    entitlement_json,
    iso,
    subject_entitlements,
    subject_fact_events,
    verdict_json,
)


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
