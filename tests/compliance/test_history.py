"""`history`: a subject's facts and every change of its decisions, as they were made.

The definition (projections.compliance.decision_changes): the decision at each moment τ with
the facts known at τ. The property tests check the listed changes against the index's own
`decide(at=τ, known_at=τ)`: just before each change it gives `before`, at it `after`, and between
two changes nothing moves.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from domain.decision import Verdict
from interlock.cli import app
from interlock.demo import ORDER, et
from interlock.engine import Engine
from projections.compliance import Change, history
from tests.unit.support import (
    FOREIGN,
    Harness,
    directive,
    employer,
    grant,
    lift,
    nationality,
    register,
    ts,
)

TICK = timedelta(microseconds=1)


def lived(engine: Engine, subject: str, model: str, moment: datetime) -> Verdict:
    """The decision at τ as known at τ, from the access index."""
    return engine.index.decide(subject, model, at=moment, known_at=moment).verdict


def check_against_index(engine: Engine, subject: str, changes: list[Change]) -> None:
    """Needs the subject's relevant facts recorded at distinct times (else `known_at` cannot
    tell them apart)."""
    by_model: dict[str, list[Change]] = {}
    for change in changes:
        by_model.setdefault(change.model, []).append(change)
    for model, listed in by_model.items():
        for number, change in enumerate(listed):
            assert lived(engine, subject, model, change.at) == change.after, change
            assert lived(engine, subject, model, change.at - TICK) == change.before, change
            if number + 1 < len(listed):
                middle = change.at + (listed[number + 1].at - change.at) / 2
                assert lived(engine, subject, model, middle) == change.after


def test_restore_at_1740_for_a_verified_us_person(demo: Engine, verified: list[str]) -> None:
    subject = verified[0]
    found = history(demo.index.facts, subject, "fable-5")
    assert found is not None
    access = [c for c in found.changes if c.before.effect != c.after.effect]
    lost, restored = access[-2], access[-1]
    assert lost.cause.event == "directive_issued" and lost.cause.ref == ORDER
    assert lost.after.effect == "deny"
    assert ("unknown_attribute", "citizenship") in lost.after.reasons
    assert restored.cause.event == "nationality_attested"
    assert restored.kind == "recorded"
    assert restored.before == lost.after and restored.after.effect == "allow"
    assert et(17, 40) <= restored.at < et(17, 41)
    assert restored.at == restored.cause.recorded_at
    attestation = next(a for a in found.attestations if a["kind"] == "nationality")
    assert restored.as_of == restored.cause.position == attestation["position"]
    assert attestation["evidence"] == f"late-doc-{subject}"
    assert restored.cause.detail["valid_from"] == "1990-01-01T00:00:00+00:00"
    check_against_index(demo, subject, found.changes)


def test_a_foreign_national_loses_access_when_the_order_is_recorded(
    demo: Engine, population: object
) -> None:
    facts = demo.index.facts
    order = facts.directives[ORDER]
    subject = next(
        name for name, s in facts.subjects.items()
        if s.attestations.get("nationality")
        and "US" not in s.attestations["nationality"][0].values["citizenship"]
        and "US" not in s.attestations["nationality"][0].values["residency"]
    )
    found = history(facts, subject)
    assert found is not None
    cut = [c for c in found.changes if c.cause.ref == ORDER]
    assert {c.model for c in cut} <= {"fable-5", "mythos-5"} and cut
    for change in cut:
        assert change.at == order.recorded_at and change.as_of == order.position
        assert change.to_json()["access"] == "lost"
    check_against_index(demo, subject, found.changes)


def test_from_and_to_keep_the_changes_inside(demo: Engine, verified: list[str]) -> None:
    found = history(demo.index.facts, verified[0], start=et(17, 30), end=et(18, 0))
    assert found is not None
    assert {c.cause.event for c in found.changes} == {"nationality_attested"}
    assert history(demo.index.facts, "nobody") is None


def test_a_known_fact_taking_effect_later_is_a_change_at_its_valid_time(h: Harness) -> None:
    for number, command in enumerate((register("fable-5", "fable"), nationality("de", ["DE"]),
                                      grant("e-de", subject="de"))):
        h.apply(command, recorded_at=f"2026-01-0{number + 1}T00:00:00+00:00")
    h.apply(directive("order", models=["fable-5"], subjects=FOREIGN,
                      effective_at="2026-11-26T23:00:00+00:00"),
            recorded_at="2026-11-26T22:21:00+00:00")
    h.apply(lift("order", effective_at="2026-11-27T06:00:00+00:00"),
            recorded_at="2026-11-27T01:00:00+00:00")
    found = history(h.engine.index.facts, "de", "fable-5")
    assert found is not None
    order = [c for c in found.changes if c.cause.ref == "order"]
    assert [(c.kind, c.cause.event, c.at, c.to_json()["access"]) for c in order] == [
        ("took_effect", "directive_issued", ts("2026-11-26T23:00:00+00:00"), "lost"),
        ("took_effect", "directive_lifted", ts("2026-11-27T06:00:00+00:00"), "gained"),
    ]
    assert order[0].as_of == order[0].cause.position
    check_against_index(h.engine, "de", found.changes)


def test_expiry_and_late_corrections(h: Harness) -> None:
    """An attestation that expires, an employer's grant, and a passport recorded late."""
    h.apply(register("fable-5", "fable"), recorded_at="2026-01-01T00:00:00+00:00")
    h.apply(grant("e-acme", org="acme"), recorded_at="2026-01-01T12:00:00+00:00")
    h.apply(employer("u-9", "acme"), recorded_at="2026-01-02T00:00:00+00:00")
    h.apply(directive("order", models=["fable-5"], subjects=FOREIGN,
                      effective_at="2026-03-01T00:00:00+00:00"),
            recorded_at="2026-03-01T00:00:00+00:00")
    h.apply(nationality("u-9", ["US"], valid_from="1990-01-01T00:00:00+00:00",
                        valid_until="2026-06-01T00:00:00+00:00"),
            recorded_at="2026-04-01T00:00:00+00:00")
    found = history(h.engine.index.facts, "u-9", "fable-5")
    assert found is not None
    assert [(c.kind, c.cause.event, c.to_json()["access"]) for c in found.changes] == [
        ("recorded", "model_registered", None),
        ("recorded", "employer_attested", "gained"),
        ("recorded", "directive_issued", "lost"),
        ("recorded", "nationality_attested", "gained"),
        ("took_effect", "nationality_attested", "lost"),
    ]
    assert found.changes[-1].at == ts("2026-06-01T00:00:00+00:00")
    assert found.entitlements[0]["grantee"] == {"org": "acme"}
    check_against_index(h.engine, "u-9", found.changes)


def test_cli_history(demo_db: Path, verified: list[str]) -> None:
    runner = CliRunner()
    store = f"sqlite:///{demo_db}"
    result = runner.invoke(app, ["history", verified[0], "--model", "fable-5", "--json",
                                 "--store", store])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"subject", "as_of", "models", "from", "to", "attestations",
                         "revocations", "entitlements", "changes", "decisions"}
    restored = data["changes"][-1]
    assert set(restored) == {"model", "at", "as_of", "kind", "access", "cause", "before",
                             "after"}
    assert restored["access"] == "gained" and restored["cause"]["event"] == "nationality_attested"
    assert restored["cause"]["source"] == "passport-kyc"
    human = runner.invoke(app, ["history", verified[0], "--store", store])
    assert human.exit_code == 0 and "nationality_attested" in human.stdout
    assert runner.invoke(app, ["history", "nobody", "--store", store]).exit_code == 1
    assert runner.invoke(app, ["history", verified[0], "--model", "nope",
                               "--store", store]).exit_code == 1
