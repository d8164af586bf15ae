"""Minimal compliance queries over the access index's fact base: a subject's history, a
directive's impact, and who gained or lost access between two valid times.

They read the fact base under the index lock, a subject at a time, so the follower and the
decision path are never held up for a whole scan. Each scan pins one position first, so its
answer is as known at that position even while the index moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from domain.decision import NO_CONTEXT, Decision, judge
from domain.facts import EntitlementFacts, FactBase, selector_matches
from interlock.http.models import (
    AttestationOut,
    AttestationRevocationOut,
    ChangeOut,
    DiffOut,
    EntitlementOut,
    HistoryOut,
    ImpactOut,
    RevocationOut,
)
from projections.access_index import AccessIndex


def _decision(facts: FactBase, subject: str, model: str, at: datetime, as_of: int) -> Decision:
    return Decision.of(subject, model, judge(facts, subject, model, at, as_of, NO_CONTEXT), at,
                       as_of)


def _change(before: Decision, after: Decision) -> ChangeOut:
    return ChangeOut.model_validate({
        "subject": before.subject, "model": before.model,
        "before": before.to_json(), "after": after.to_json(),
    })


def _entitlement(facts: FactBase, entitlement: EntitlementFacts) -> EntitlementOut:
    return EntitlementOut(
        entitlement=entitlement.entitlement,
        grantee={entitlement.grantee_kind: entitlement.grantee},  # type: ignore[dict-item]
        models=list(entitlement.selectors),
        valid_from=entitlement.valid_from,
        valid_until=entitlement.valid_until,
        recorded_at=entitlement.recorded_at,
        position=entitlement.position,
        revocations=[
            RevocationOut(effective_at=effective_at, recorded_at=facts.recorded_at(position),
                          position=position)
            for effective_at, position in entitlement.revocations
        ],
    )


def history(
    index: AccessIndex, subject: str, model: str | None, current: Callable[[str, str], Decision]
) -> HistoryOut | None:
    """Everything known about `subject` and its current decisions; None when nothing is."""
    with index.lock:
        facts = index.facts
        subject_facts = facts.subjects.get(subject)
        if subject_facts is None:
            return None
        attestations = sorted(
            (a for history in subject_facts.attestations.values() for a in history),
            key=lambda a: a.position,
        )
        orgs = sorted({org for a in attestations for org in a.values.get("employer", ())})
        entitlements = [*subject_facts.entitlements,
                        *(e for org in orgs for e in facts.org_entitlements.get(org, ()))]
        out: dict[str, Any] = {
            "subject": subject,
            "as_of": facts.position,
            "attestations": [
                AttestationOut(
                    kind=a.kind,  # type: ignore[arg-type]
                    values={name: sorted(values) for name, values in a.values.items()},
                    valid_from=a.valid_from, valid_until=a.valid_until,
                    recorded_at=a.recorded_at, position=a.position, source=a.source,
                    evidence=a.evidence,
                )
                for a in attestations
            ],
            "revocations": sorted(
                (
                    AttestationRevocationOut(
                        kind=kind,  # type: ignore[arg-type]
                        effective_at=effective_at, recorded_at=facts.recorded_at(position),
                        position=position,
                    )
                    for kind, revocations in subject_facts.revocations.items()
                    for effective_at, position in revocations
                ),
                key=lambda r: r.position,
            ),
            "entitlements": [_entitlement(facts, e) for e in entitlements],
        }
        models = sorted(facts.models) if model is None else [model]
    out["decisions"] = [current(subject, name).to_json() for name in models]
    return HistoryOut.model_validate(out)


def impact(index: AccessIndex, directive: str) -> ImpactOut | None:
    """Which (subject, model) decisions the directive changed when issued, compared at its
    effective time as known just before and just after it; None for an unknown directive."""
    with index.lock:
        facts = index.facts
        found = facts.directives.get(directive)
        if found is None:
            return None
        position, at = found.position, found.effective_at
        terms = found.terms(at, position)
        models = sorted(
            name for name, model in facts.models.items()
            if model.position <= position and terms.covers(name, model.family)
        )
        subjects = list(facts.subjects)
    changes = []
    for subject in subjects:
        with index.lock:
            for model in models:
                before = _decision(facts, subject, model, at, position - 1)
                after = _decision(facts, subject, model, at, position)
                if before.verdict != after.verdict:
                    changes.append(_change(before, after))
    return ImpactOut(directive=directive, position=position, effective_at=at, models=models,
                     subjects=len(subjects), changes=changes)


def diff(index: AccessIndex, start: datetime, end: datetime, model: str | None) -> DiffOut:
    """Who had an `allow` at one valid time and not at the other, as known now."""
    with index.lock:
        facts = index.facts
        position = facts.position
        models = sorted(_models(facts, model))
        subjects = list(facts.subjects)
    gained, lost = [], []
    for subject in subjects:
        with index.lock:
            for name in models:
                before = _decision(facts, subject, name, start, position)
                after = _decision(facts, subject, name, end, position)
                if (before.effect == "allow") != (after.effect == "allow"):
                    (gained if after.effect == "allow" else lost).append(_change(before, after))
    return DiffOut(from_=start, to=end, as_of=position, models=models, gained=gained, lost=lost)


def _models(facts: FactBase, model: str | None) -> Iterable[str]:
    if model is None:
        return facts.models
    return [name for name, m in facts.models.items() if selector_matches(model, name, m.family)]
