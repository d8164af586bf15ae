"""`Reach.maybe` against the rule: a subject it leaves out of a directive's candidates must be
one for whom the directive's predicate is false, evaluated on the very attribute values the
decision looks up, at every time from the last recording on."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from domain.decision import attribute_lookup
from projections.compliance import load_view
from tests.unit.support import ts
from tests.unit.test_properties import ASK_TIMES, SETTINGS, build, streams


@SETTINGS
@given(stream=streams())
def test_subjects_left_out_of_reach_are_those_the_predicate_is_false_for(
    stream: list[tuple[dict[str, Any], str]],
) -> None:
    h = build(stream)
    view = load_view(h.engine.app)
    facts, reach = view.facts, view.reach
    assert reach is not None
    last_recorded = facts.recorded_at(facts.position)
    assert last_recorded is not None
    moments = [ts(t) for t in ASK_TIMES if ts(t) >= last_recorded]
    everyone = set(facts.subjects) | {"u-x"}
    for directive in facts.directives.values():
        for terms in directive.all_terms():
            candidates = reach.maybe(terms.predicate, everyone)
            for subject in everyone - candidates:
                for at in moments:
                    lookup = attribute_lookup(facts, subject, at, facts.position)
                    truth, _ = terms.predicate.evaluate(lookup)
                    assert truth is False, (subject, at, terms.predicate)
