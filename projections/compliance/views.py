"""The facts views the officer tools share: a replayed view, stored facts as events and
their JSON, and the verdict JSON every answer uses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from domain.decision import (
    NO_CONTEXT,
    Verdict,
    judge,
)
from domain.facts import (
    Attestation,
    DirectiveFacts,
    EntitlementFacts,
    FactBase,
    SubjectFacts,
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
