"""`diff` agrees with `impact` and with brute force; `explain` shows the facts a decision used."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from domain.decision import NO_CONTEXT, judge
from interlock.cli import app
from interlock.demo import ORDER, et
from interlock.engine import Engine
from projections.compliance import View, diff, explain, impact
from tests.unit.support import FOREIGN, Harness, directive, grant, nationality, register

BEFORE, AFTER = et(17, 20), et(17, 22)


def test_diff_across_the_order_agrees_with_impact(view: View, verified: list[str]) -> None:
    facts = view.facts
    order = facts.directives[ORDER]
    pairs = {(r.subject, r.model) for r in impact(facts, ORDER, view.reach).rows}

    then = diff(facts, BEFORE, AFTER, as_of=order.position, reach=view.reach)
    assert {(r.subject, r.model) for r in then.lost} == pairs and not then.gained

    now = diff(facts, BEFORE, AFTER, reach=view.reach)
    assert {(r.subject, r.model) for r in now.lost} == {
        (s, m) for s, m in pairs if s not in verified}
    assert not now.gained
    brute = {
        (s, m) for s in facts.subjects for m in facts.models
        if judge(facts, s, m, BEFORE, facts.position, NO_CONTEXT).effect == "allow"
        and judge(facts, s, m, AFTER, facts.position, NO_CONTEXT).effect != "allow"
    }
    assert {(r.subject, r.model) for r in now.lost} == brute
    assert diff(facts, BEFORE, AFTER, reach=None).lost == now.lost
    reverse = diff(facts, AFTER, BEFORE, model="family:fable", reach=view.reach)
    assert {(r.subject, r.model) for r in reverse.gained} == {
        (s, m) for s, m in brute if m == "fable-5"}


def test_cli_diff_json(demo_db: Path) -> None:
    result = CliRunner().invoke(app, [
        "diff", "--from", BEFORE.isoformat(), "--to", AFTER.isoformat(), "--model", "mythos-5",
        "--json", "--store", f"sqlite:///{demo_db}"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"from", "to", "as_of", "models", "compared", "counts", "gained",
                         "lost"}
    assert data["models"] == ["mythos-5"] and data["counts"]["lost"]["mythos-5"] == len(
        data["lost"])
    row = data["lost"][0]
    assert row["before"]["effect"] == "allow" and row["after"]["effect"] == "deny"


def test_explain_unknown_nationality(demo: Engine, population: object,
                                     verified: list[str]) -> None:
    facts = demo.index.facts
    subject = verified[0]
    asked = et(17, 25)
    shown = explain(facts, subject, "fable-5", asked, known_at=asked)
    decision = shown["decision"]
    assert decision == demo.index.decide(subject, "fable-5", at=asked, known_at=asked).to_json()
    assert decision["effect"] == "deny"
    assert {"code": "unknown_attribute", "ref": "citizenship"} in decision["reasons"]
    citizenship = shown["subject"]["attributes"]["citizenship"]
    assert citizenship["values"] is None and "no nationality attestation" in citizenship[
        "why_unknown"]
    employer = shown["subject"]["attributes"]["employer"]
    assert employer["attestation"]["source"] == "hr-feed"
    (step,) = shown["models"]
    assert [e["entitlement"] for e in step["entitlements"] if e["matched"]] == [
        "org-interlock-ai"]
    (order,) = step["directives"]
    assert order["applies"] and order["truth"] is None
    assert order["predicate"] == {"truth": None, "unknown": ["citizenship"], "node": "none_of",
                                  "attribute": "citizenship", "values": ["US"], "actual": None}

    now = explain(facts, subject, "fable-5", asked)
    assert now["decision"]["effect"] == "allow"
    passport = now["subject"]["attributes"]["citizenship"]["attestation"]
    assert passport["evidence"] == f"late-doc-{subject}" and passport["source"] == "passport-kyc"
    assert passport["valid_from"] == "1990-01-01T00:00:00+00:00"
    assert now["models"][0]["directives"][0]["truth"] is False


def test_explain_walks_nested_predicates_and_routes(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), register("opus-4.8", "opus"),
            nationality("de", ["DE"]), grant("e-de", subject="de"),
            directive("reroute", models=["fable-5"], effect="route", route_to="opus-4.8",
                      subjects={"all": [FOREIGN, {"not": {"location": {"any_of": ["US"]}}}]}))
    shown = explain(h.engine.index.facts, "de", "fable-5", h.now)
    assert shown["decision"]["effect"] == "route"
    assert shown["decision"]["route_to"] == "opus-4.8"
    first, target = shown["models"]
    assert first["route"] == {"directive": "reroute", "to": "opus-4.8"}
    assert target["model"] == "opus-4.8" and target["verdict"]["effect"] == "allow"
    tree = first["directives"][0]["predicate"]
    assert tree["node"] == "all" and tree["truth"] is None
    assert [part["truth"] for part in tree["parts"]] == [True, None]
    assert tree["parts"][1]["parts"][0]["unknown"] == ["location"]


def test_cli_explain(demo_db: Path, verified: list[str]) -> None:
    runner = CliRunner()
    args = ["explain", verified[0], "fable-5", "--at", et(17, 25).isoformat(), "--known-at",
            et(17, 25).isoformat(), "--store", f"sqlite:///{demo_db}"]
    data = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert set(data) == {"decision", "at", "as_of", "known_at", "context", "subject", "models"}
    human = runner.invoke(app, args)
    assert human.exit_code == 0, human.output
    assert "unknown" in human.stdout and "bis-2026-0417" in human.stdout
