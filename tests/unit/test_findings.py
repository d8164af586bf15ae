"""`judge` and the findings `explain` renders are one rule: on random streams, the directives a
verdict names are those whose finding applies, and a route goes where `chosen_route` says."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from domain.decision import NO_CONTEXT, Reason, attribute_lookup, chosen_route, find, judge

from .support import ts
from .test_properties import ASK_MODELS, ASK_SUBJECTS, ASK_TIMES, SETTINGS, build, streams


@SETTINGS
@given(stream=streams())
def test_verdicts_agree_with_the_findings(stream: list[tuple[dict[str, Any], str]]) -> None:
    facts = build(stream).engine.index.facts
    position = facts.position
    for model in ASK_MODELS:
        model_facts = facts.models.get(model)
        if model_facts is None:
            continue
        for subject in ASK_SUBJECTS:
            for at in map(ts, ASK_TIMES):
                verdict = judge(facts, subject, model, at, position, NO_CONTEXT)
                lookup = attribute_lookup(facts, subject, at, position)
                findings = [find(d, subject, model, model_facts.family, at, position, lookup)
                            for d in facts.directives.values()]
                applying = {f.directive.directive: f for f in findings if f.applies}
                denying = {d for d, f in applying.items()
                           if f.terms is not None and f.terms.effect == "deny"}
                if verdict.effect == "allow":
                    assert not applying
                elif verdict.effect == "route":
                    route = chosen_route(findings)
                    assert route is not None and not denying
                    assert Reason("route", route.directive.directive) in verdict.reasons
                else:
                    codes = {r.code for r in verdict.reasons}
                    if "directive" in codes and "route_target_denied" not in codes:
                        named = {r.ref for r in verdict.reasons if r.code == "directive"}
                        assert named == denying
