"""`impact` and `--what-if`: exactly the (subject, model) decisions a directive changes, checked
against brute force over every subject and model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domain.commands import CommandError, IssueDirective, parse_command
from domain.facts import FactBase
from interlock.cli import app
from interlock.demo import ORDER, ORDER_COMMAND, Population
from interlock.engine import Engine
from projections.compliance import View, impact, load_view, what_if
from tests.unit.support import (
    FOREIGN,
    Harness,
    directive,
    grant,
    nationality,
    register,
)


def brute_force(facts: FactBase, name: str) -> set[tuple[str, str]]:
    """Every (subject, model) whose decision at the directive's effective time differs between
    the position before it and its own: the definition, over everyone."""
    from domain.decision import NO_CONTEXT, judge

    d = facts.directives[name]
    return {
        (subject, model)
        for subject in facts.subjects for model in facts.models
        if judge(facts, subject, model, d.effective_at, d.position - 1, NO_CONTEXT)
        != judge(facts, subject, model, d.effective_at, d.position, NO_CONTEXT)
    }


def test_the_order_cuts_off_exactly_whom_the_rule_denies(
    view: View, population: Population, verified: list[str]
) -> None:
    facts = view.facts
    result = impact(facts, ORDER, view.reach)
    pairs = {(row.subject, row.model) for row in result.rows}
    assert pairs == brute_force(facts, ORDER)
    d = facts.directives[ORDER]
    denied = {
        (subject, model) for subject in facts.subjects for model in facts.models
        if view.index.decide(subject, model, at=d.effective_at, as_of=d.position - 1).effect
        == "allow"
        and ("directive", ORDER) in view.index.decide(
            subject, model, at=d.effective_at, as_of=d.position).reasons
    }
    assert pairs == denied
    assert {model for _, model in pairs} == {"fable-5", "mythos-5"}
    assert result.compared < len(facts.subjects), "reach should narrow the candidates"
    unknown = {row.subject for row in result.rows if row.group == "unknown_attribute"}
    assert unknown == set(population.unattested_employees)
    assert set(verified) <= unknown, "settled later, but unknown when the order came"
    assert all(row.unknown == ("citizenship",) for row in result.rows
               if row.group == "unknown_attribute")
    groups = {g["group"]: g for g in result.groups()}
    assert groups["unknown_attribute"]["pairs"] + groups["predicate"]["pairs"] == len(pairs)
    assert impact(facts, ORDER, None).rows == result.rows


def test_reach_is_not_trusted_before_a_settled_value_was_valid(h: Harness) -> None:
    """A backdated order: at its effective time (10:00) the 12:00 passport was not valid yet,
    so the citizen's nationality was unknown then and the order did apply to them."""
    h.apply(register("fable-5", "fable"), recorded_at="2026-11-26T09:00:00+00:00")
    h.apply(nationality("us-noon", ["US"], valid_from="2026-11-26T12:00:00+00:00"),
            grant("e-1", subject="us-noon"), nationality("us-old", ["US"]),
            grant("e-2", subject="us-old"), nationality("de", ["DE"]), grant("e-3", subject="de"),
            recorded_at="2026-11-26T12:00:00+00:00")
    h.apply(directive("backdated", models=["fable-5"], subjects=FOREIGN,
                      effective_at="2026-11-26T10:00:00+00:00"),
            recorded_at="2026-11-26T17:00:00+00:00")
    view = load_view(h.engine.app)
    result = impact(view.facts, "backdated", view.reach)
    assert {(r.subject, r.group) for r in result.rows} == {
        ("us-noon", "unknown_attribute"), ("de", "predicate")}
    assert {(r.subject, r.model) for r in result.rows} == brute_force(view.facts, "backdated")


def test_what_if_on_current_facts_stores_nothing(population: Population) -> None:
    h = Harness("2026-11-26T14:00:00+00:00")
    h.apply_all(population.commands)
    before = h.position
    command = parse_command(ORDER_COMMAND)
    assert isinstance(command, IssueDirective)
    hypothetical = what_if(h.engine.app, command, clock=h.clock)
    assert hypothetical.what_if and h.position == before
    assert ORDER not in load_view(h.engine.app).facts.directives
    h.apply(ORDER_COMMAND, recorded_at="2026-11-26T14:00:00+00:00")
    view = load_view(h.engine.app)
    issued = impact(view.facts, ORDER, view.reach)
    assert hypothetical.rows == issued.rows and issued.rows
    assert hypothetical.after == issued.after == before + 1
    with pytest.raises(CommandError) as refused:
        what_if(h.engine.app, command, clock=h.clock)
    assert refused.value.field == "directive"


def test_cli_impact_and_what_if(demo_copy: Path, demo: Engine) -> None:
    runner = CliRunner()
    store = f"sqlite:///{demo_copy}"
    shown = runner.invoke(app, ["impact", ORDER, "--json", "--store", store])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert set(data) == {
        "directive", "what_if", "authority", "reference", "received_at", "effective_at",
        "recorded_at", "position", "effect", "selectors", "predicate", "on_unknown", "compared",
        "changed", "groups", "changes"}
    assert data["changed"]["pairs"] == len(data["changes"]) > 0
    assert sum(g["pairs"] for g in data["groups"]) == data["changed"]["pairs"]
    human = runner.invoke(app, ["impact", ORDER, "--store", store])
    assert human.exit_code == 0 and "unknown citizenship" in human.stdout

    proposal = demo_copy.parent / "proposal.json"
    proposal.write_text(json.dumps({**ORDER_COMMAND, "directive": "proposal-2",
                                    "models": ["opus-4.8"]}))
    before = demo.app.position
    answered = runner.invoke(app, ["impact", "--what-if", str(proposal), "--json",
                                   "--store", store])
    assert answered.exit_code == 0, answered.output
    hypothetical = json.loads(answered.stdout)
    assert hypothetical["what_if"] is True and hypothetical["changed"]["by_model"] == {
        "opus-4.8": hypothetical["changed"]["pairs"]}
    assert runner.invoke(app, ["position", "--store", store]).stdout.strip() == str(before)

    unknown_model = demo_copy.parent / "bad.json"
    unknown_model.write_text(json.dumps({**ORDER_COMMAND, "directive": "x", "models": ["nope"]}))
    refused = runner.invoke(app, ["impact", "--what-if", str(unknown_model), "--store", store])
    assert refused.exit_code == 2 and "models" in refused.stderr
    missing = runner.invoke(app, ["impact", "no-such-order", "--store", store])
    assert missing.exit_code == 1


@pytest.mark.parametrize("args", [[], [ORDER, "--what-if", "x.json"]])
def test_cli_impact_needs_one_of_directive_or_what_if(args: list[str], demo_copy: Path) -> None:
    result = CliRunner().invoke(app, ["impact", *args, "--store", f"sqlite:///{demo_copy}"])
    assert result.exit_code == 2
