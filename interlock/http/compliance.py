"""The auditor's queries over HTTP: a subject's history, a directive's impact, and who gained
or lost access between two valid times. Impact and diff are `projections.compliance`'s, the
same as `interlock impact` and `interlock diff`, shaped into the API's typed bodies; they hold
the index lock while they run, and use the embedded enforcer's reach indexes when there is one
to look only at the subjects that can have changed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from domain.decision import Decision
from domain.facts import EntitlementFacts, FactBase
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
from projections import compliance
from projections.access_index import AccessIndex
from projections.reach import Reach


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
    with index.reading():
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


def impact(index: AccessIndex, directive: str, reach: Reach | None = None) -> ImpactOut | None:
    """`interlock impact` over HTTP (projections.compliance.impact); None for an unknown
    directive."""
    with index.reading():
        if directive not in index.facts.directives:
            return None
        found = compliance.impact(index.facts, directive, reach)
    return ImpactOut(
        directive=directive, position=found.after, effective_at=found.at,
        models=list(found.models), subjects=found.compared,
        changes=[_change_of(row, found.at, found.before, found.at, found.after)
                 for row in found.rows],
    )


def diff(index: AccessIndex, start: datetime, end: datetime, model: str | None,
         reach: Reach | None = None) -> DiffOut:
    """`interlock diff` over HTTP (projections.compliance.diff), as known now."""
    with index.reading():
        found = compliance.diff(index.facts, start, end, model, reach=reach)
    position = found.as_of
    return DiffOut(
        from_=start, to=end, as_of=position, models=found.models,
        gained=[_change_of(row, start, position, end, position) for row in found.gained],
        lost=[_change_of(row, start, position, end, position) for row in found.lost],
    )


def _change_of(row: Any, at_before: datetime, before: int, at_after: datetime, after: int
               ) -> ChangeOut:
    return ChangeOut(
        subject=row.subject, model=row.model,
        before=Decision.of(row.subject, row.model, row.before, at_before, before).to_json(),
        after=Decision.of(row.subject, row.model, row.after, at_after, after).to_json(),
    )
