"""A digest of every decision-relevant fact, section by section, for comparing indexes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from domain.decision import utc_iso
from domain.facts import FactBase


def fact_items(facts: FactBase) -> Iterator[tuple[str, str, Any]]:
    """(section, key, canonical data) for every decision-relevant part of a fact base."""
    for name in sorted(facts.models):
        model = facts.models[name]
        yield "models", name, [model.family, model.position,
                               [[utc_iso(e), p, w] for e, p, w in model.changes]]
    for name in sorted(facts.entitlements):
        e = facts.entitlements[name]
        yield "entitlements", name, [
            e.grantee_kind, e.grantee, list(e.selectors), utc_iso(e.valid_from),
            utc_iso(e.valid_until), e.position, utc_iso(e.recorded_at),
            [[utc_iso(at), p] for at, p in e.revocations],
        ]
    for name in sorted(facts.subjects):
        s = facts.subjects[name]
        yield "subjects", name, [
            s.position,
            {kind: [[{k: sorted(v) for k, v in a.values.items()}, utc_iso(a.valid_from),
                     utc_iso(a.valid_until), a.position, utc_iso(a.recorded_at), a.source,
                     a.evidence] for a in history]
             for kind, history in sorted(s.attestations.items())},
            {kind: [[utc_iso(at), p] for at, p in revs]
             for kind, revs in sorted(s.revocations.items())},
            [e.entitlement for e in s.entitlements],
            [utc_iso(t) for t in s.times],
        ]
    for name in sorted(facts.directives):
        d = facts.directives[name]
        yield "directives", name, [
            d.authority, d.reference, utc_iso(d.received_at), utc_iso(d.effective_at),
            d.position, utc_iso(d.recorded_at), d.base,
            [[utc_iso(at), p, terms] for at, p, terms in d.amendments],
            None if d.lift is None else [utc_iso(d.lift[0]), d.lift[1]],
        ]
    yield "log", "position", facts.position
    yield "log", "global_times", [utc_iso(t) for t in facts.global_times]


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass
class StateDigest:
    """A sha256 per section (models, entitlements, subjects, directives, log, decisions) over
    its items in key order; `digest` folds the sections."""

    hashers: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, key: str, text: bytes) -> None:
        hashing = self.hashers.get(section)
        if hashing is None:
            hashing = self.hashers[section] = hashlib.sha256()
        hashing.update(key.encode() + b"\0" + text + b"\n")

    @property
    def sections(self) -> dict[str, str]:
        return {name: hashing.hexdigest() for name, hashing in sorted(self.hashers.items())}

    @property
    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.sections)).hexdigest()


def state_digest(facts: FactBase) -> StateDigest:
    """A digest of everything in the fact base a decision can depend on."""
    digest = StateDigest()
    for section, key, data in fact_items(facts):
        digest.add(section, key, _canonical(data))
    return digest


def _verdict_bytes(verdict: Any) -> bytes:
    return _canonical([verdict.effect, verdict.route_to, verdict.disclosed,
                       [[r.code, r.ref] for r in verdict.reasons]])
