"""The facts one decision used, each predicate evaluated node by node."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.decision import (
    MAX_ROUTE_HOPS,
    NO_CONTEXT,
    Context,
    Decision,
    Finding,
    attribute_lookup,
    chosen_route,
    find,
    judge,
)
from domain.facts import (
    ATTRIBUTE_KIND,
    FactBase,
    SubjectFacts,
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
from projections.compliance.views import attestation_json, entitlement_json, iso, verdict_json


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
    """Why `SubjectFacts.attestation` found nothing in force, in its own steps."""
    history = [] if subject is None else subject.attestations.get(kind, [])
    known = [a for a in history if a.position <= as_of]
    if subject is None or not known:
        return f"no {kind} attestation known at position {as_of}"
    latest = subject.latest(kind, at, as_of)
    if latest is None:
        return f"no {kind} attestation valid yet (the first is valid from " \
               f"{iso(min(a.valid_from for a in known))})"
    if latest.expired(at):
        return f"the {kind} attestation at position {latest.position} expired at " \
               f"{iso(latest.valid_until)}"
    revocation = subject.revocation(kind, latest, at, as_of)
    if revocation is not None:
        return f"the {kind} attestation at position {latest.position} was revoked from " \
               f"{iso(revocation[0])} (position {revocation[1]})"
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


def _directive_explanation(finding: Finding, at: datetime, as_of: int,
                           lookup: AttributeLookup) -> dict[str, Any]:
    """What the rule found for one directive, as the explanation shows it."""
    d, terms = finding.directive, finding.terms
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
    out.update(in_force=True, why=None, covers=finding.covers, exempt=finding.exempt,
               predicate=explain_predicate(terms.predicate, lookup), truth=finding.truth,
               applies=finding.applies)
    return out


def _explain_model(
    facts: FactBase, subject: str, model: str, at: datetime, as_of: int, context: Context
) -> tuple[dict[str, Any], Finding | None]:
    """One model's step of the explanation, and the route the rule takes from it."""
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
        return out, None
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
    findings = [
        find(d, subject, model, model_facts.family, at, as_of, lookup)
        for d in facts.directives.values() if d.position <= as_of
    ]
    out["directives"] = [_directive_explanation(f, at, as_of, lookup) for f in findings]
    if out["withdrawn"] or not any(e["matched"] for e in out["entitlements"]):
        return out, None
    return out, chosen_route(findings)


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
    step, route = _explain_model(facts, subject, model, at, position, context)
    steps = [step]
    seen = {model}
    while route is not None and len(steps) <= MAX_ROUTE_HOPS:
        assert route.terms is not None
        target = route.terms.route_to
        steps[-1]["route"] = {"directive": route.directive.directive, "to": target}
        if target is None or target in seen:
            break
        seen.add(target)
        step, route = _explain_model(facts, subject, target, at, position, context)
        steps.append(step)
    return {
        "decision": decision.to_json(),
        "at": iso(at), "as_of": position, "known_at": iso(known_at),
        "context": {"location": context.location, "purpose": context.purpose},
        "subject": {"subject": subject, "known": subject in facts.subjects,
                    "attributes": explain_attributes(facts, subject, at, position, context)},
        "models": steps,
    }
