"""The decision rule (docs/decision-rule.md), pinned case by case.

Every decision is asked of the real access index after the real application stored the
commands in the memory store. The `world` fixture: models fable-5, fable-4 (family fable) and
mythos-5 (family mythos); subjects `us` (US citizen), `de` (German citizen) and `anon` (no
nationality attestation), each with a subject entitlement to `*` from 2026-01-01.
"""

from __future__ import annotations

import json

from domain.decision import Reason, sorted_reasons

from .support import (
    APR,
    FEB,
    FOREIGN,
    JAN,
    JUL,
    JUN,
    MAR,
    MAY,
    Harness,
    amend,
    directive,
    employer,
    grant,
    lift,
    location,
    nationality,
    register,
    reinstate,
    revoke_attestation,
    revoke_entitlement,
    withdraw,
)

AT = JUN
ALLOWED_US = [("entitled", "e-us")]


def directive_reason(name: str) -> tuple[str, str]:
    return ("directive", name)


# --- 1. unknown_model, model_withdrawn ---------------------------------------------------------


def test_unregistered_model_is_denied_unknown_model(world: Harness) -> None:
    decision = world.decide("us", "nope-1", AT)
    assert decision["effect"] == "deny"
    assert decision["reasons"] == [{"code": "unknown_model", "ref": None}]


def test_unknown_model_comes_before_entitlement(h: Harness) -> None:
    assert h.reasons("nobody", "nope-1", AT) == [("unknown_model", None)]


def test_model_registered_after_as_of_is_unknown(world: Harness) -> None:
    before = world.position
    world.apply(register("opus-1", "opus"), grant("e-opus", subject="us", models=["opus-1"]))
    assert world.reasons("us", "opus-1", AT) == [("entitled", "e-opus"), ("entitled", "e-us")]
    assert world.reasons("us", "opus-1", AT, as_of=before) == [("unknown_model", None)]


def test_model_withdrawn_in_the_past_is_denied(world: Harness) -> None:
    world.apply(withdraw("fable-5", MAR), recorded_at=MAR)
    assert world.reasons("us", "fable-5", AT) == [("model_withdrawn", None)]
    assert world.decide("us", "fable-5", AT)["effect"] == "deny"
    assert world.reasons("us", "fable-4", AT) == ALLOWED_US


def test_model_withdrawn_is_allowed_before_its_effective_at(world: Harness) -> None:
    world.apply(withdraw("fable-5", MAR), recorded_at=MAR)
    assert world.reasons("us", "fable-5", FEB) == ALLOWED_US


def test_model_withdrawal_effective_in_the_future(world: Harness) -> None:
    """Recorded now, effective later: still allowed until then, withdrawn from then on."""
    world.apply(withdraw("fable-5", JUL), recorded_at=FEB)
    assert world.effect("us", "fable-5", AT) == "allow"
    assert world.reasons("us", "fable-5", JUL) == [("model_withdrawn", None)]


def test_withdrawal_effective_at_defaults_to_recorded_time(world: Harness) -> None:
    world.apply(withdraw("fable-5"), recorded_at=MAR)
    assert world.effect("us", "fable-5", FEB) == "allow"
    assert world.reasons("us", "fable-5", MAR) == [("model_withdrawn", None)]


def test_reinstated_model_is_allowed_again_from_reinstatement(world: Harness) -> None:
    world.apply(withdraw("fable-5", MAR), reinstate("fable-5", MAY), recorded_at=MAY)
    assert world.reasons("us", "fable-5", FEB) == ALLOWED_US
    assert world.reasons("us", "fable-5", APR) == [("model_withdrawn", None)]
    assert world.reasons("us", "fable-5", AT) == ALLOWED_US


def test_model_withdrawn_comes_before_entitlement(world: Harness) -> None:
    world.apply(withdraw("fable-5", MAR))
    assert world.reasons("nobody", "fable-5", AT) == [("model_withdrawn", None)]


def test_model_withdrawn_comes_before_directives(world: Harness) -> None:
    world.apply(withdraw("fable-5", MAR), directive("d", models=["fable-5"]))
    assert world.reasons("de", "fable-5", AT) == [("model_withdrawn", None)]


# --- 2. entitlements ---------------------------------------------------------------------------


def test_no_entitlement_is_denied(world: Harness) -> None:
    world.apply(nationality("u-9", ["US"]))
    decision = world.decide("u-9", "fable-5", AT)
    assert decision["effect"] == "deny"
    assert decision["reasons"] == [{"code": "no_entitlement", "ref": None}]


def test_entitled_subject_is_allowed_with_entitled_reason(world: Harness) -> None:
    decision = world.decide("us", "fable-5", AT)
    assert decision["effect"] == "allow"
    assert decision["route_to"] is None
    assert decision["reasons"] == [{"code": "entitled", "ref": "e-us"}]


def test_entitlement_active_from_valid_from_until_valid_until(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        grant("e-1", subject="u-1", models=["fable-5"], valid_from=FEB, valid_until=APR),
    )
    assert h.reasons("u-1", "fable-5", JAN) == [("no_entitlement", None)]
    assert h.reasons("u-1", "fable-5", FEB) == [("entitled", "e-1")]
    assert h.reasons("u-1", "fable-5", MAR) == [("entitled", "e-1")]
    assert h.reasons("u-1", "fable-5", APR) == [("no_entitlement", None)]


def test_entitlement_valid_from_defaults_to_recorded_time(h: Harness) -> None:
    h.apply(register("fable-5", "fable"))
    h.apply(grant("e-1", subject="u-1", models=["fable-5"], valid_from=None), recorded_at=MAR)
    assert h.effect("u-1", "fable-5", FEB) == "deny"
    assert h.effect("u-1", "fable-5", MAR) == "allow"


def test_revoked_entitlement_is_inactive_from_its_effective_at(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), grant("e-1", subject="u-1", models=["fable-5"]))
    h.apply(revoke_entitlement("e-1", MAR), recorded_at=APR)
    assert h.reasons("u-1", "fable-5", FEB) == [("entitled", "e-1")]
    assert h.reasons("u-1", "fable-5", MAR) == [("no_entitlement", None)]


def test_revocation_is_not_known_before_its_position(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), grant("e-1", subject="u-1", models=["fable-5"]))
    before = h.position
    h.apply(revoke_entitlement("e-1", MAR), recorded_at=APR)
    assert h.reasons("u-1", "fable-5", AT, as_of=before) == [("entitled", "e-1")]
    assert h.reasons("u-1", "fable-5", AT) == [("no_entitlement", None)]


def test_entitlement_of_another_subject_does_not_entitle(world: Harness) -> None:
    world.apply(grant("e-x", subject="someone-else", models=["*"]))
    assert world.reasons("u-9", "fable-5", AT) == [("no_entitlement", None)]


def test_one_entitled_reason_per_matching_active_entitlement(h: Harness) -> None:
    """Subject and org grants together; non-matching, expired or revoked ones are not named."""
    h.apply(
        register("fable-5", "fable"),
        register("mythos-5", "mythos"),
        employer("u-1", "acme"),
        grant("e-exact", subject="u-1", models=["fable-5"]),
        grant("e-family", subject="u-1", models=["family:fable"]),
        grant("e-org", org="acme", models=["*"]),
        grant("e-other-model", subject="u-1", models=["mythos-5"]),
        grant("e-expired", subject="u-1", models=["*"], valid_until=FEB),
        grant("e-revoked", org="acme", models=["fable-5"]),
        grant("e-other-org", org="globex", models=["*"]),
        revoke_entitlement("e-revoked", MAR),
    )
    assert h.reasons("u-1", "fable-5", AT) == [
        ("entitled", "e-exact"),
        ("entitled", "e-family"),
        ("entitled", "e-org"),
    ]


# --- selectors ---------------------------------------------------------------------------------


def test_exact_selector_matches_only_that_model(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        register("fable-4", "fable"),
        grant("e-1", subject="u-1", models=["fable-5"]),
    )
    assert h.effect("u-1", "fable-5", AT) == "allow"
    assert h.reasons("u-1", "fable-4", AT) == [("no_entitlement", None)]


def test_family_selector_matches_every_model_of_the_family(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        register("fable-4", "fable"),
        register("mythos-5", "mythos"),
        grant("e-1", subject="u-1", models=["family:fable"]),
    )
    assert h.effect("u-1", "fable-5", AT) == "allow"
    assert h.effect("u-1", "fable-4", AT) == "allow"
    assert h.reasons("u-1", "mythos-5", AT) == [("no_entitlement", None)]


def test_family_selector_matches_a_model_registered_later(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), grant("e-1", subject="u-1", models=["family:fable"]))
    h.apply(register("fable-6", "fable"))
    assert h.reasons("u-1", "fable-6", AT) == [("entitled", "e-1")]


def test_family_selector_does_not_match_the_model_id(h: Harness) -> None:
    """`family:fable-5` names a family called fable-5, not the model fable-5."""
    h.apply(register("fable-5", "fable"), grant("e-1", subject="u-1", models=["family:fable-5"]))
    assert h.reasons("u-1", "fable-5", AT) == [("no_entitlement", None)]


def test_star_selector_matches_every_model(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        register("mythos-5", "mythos"),
        grant("e-1", subject="u-1", models=["*"]),
    )
    assert h.effect("u-1", "fable-5", AT) == "allow"
    assert h.effect("u-1", "mythos-5", AT) == "allow"


def test_directive_selectors_follow_the_same_rules(world: Harness) -> None:
    world.apply(
        directive("d-exact", models=["fable-5"], subjects={"subject": {"any_of": ["us"]}}),
        directive("d-family", models=["family:mythos"], subjects={"subject": {"any_of": ["us"]}}),
    )
    assert world.reasons("us", "fable-5", AT) == [directive_reason("d-exact")]
    assert world.reasons("us", "fable-4", AT) == ALLOWED_US
    assert world.reasons("us", "mythos-5", AT) == [directive_reason("d-family")]
    world.apply(directive("d-star", models=["*"], subjects={"subject": {"any_of": ["de"]}}))
    for model in ("fable-5", "fable-4", "mythos-5"):
        assert world.reasons("de", model, AT) == [directive_reason("d-star")]


# --- employer-based entitlements ----------------------------------------------------------------


def test_org_entitlement_needs_the_subject_employed_by_the_org_at_t(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        grant("e-org", org="acme", models=["fable-5"]),
        employer("u-1", "acme", valid_from=MAR),
    )
    assert h.reasons("u-1", "fable-5", FEB) == [("no_entitlement", None)]
    assert h.reasons("u-1", "fable-5", MAR) == [("entitled", "e-org")]


def test_no_org_entitlement_after_the_employer_attestation_expires(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        grant("e-org", org="acme", models=["fable-5"]),
        employer("u-1", "acme", valid_until=APR),
    )
    assert h.reasons("u-1", "fable-5", MAR) == [("entitled", "e-org")]
    assert h.reasons("u-1", "fable-5", APR) == [("no_entitlement", None)]


def test_no_org_entitlement_after_the_employer_attestation_is_revoked(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        grant("e-org", org="acme", models=["fable-5"]),
        employer("u-1", "acme"),
        revoke_attestation("u-1", "employer", APR),
    )
    assert h.reasons("u-1", "fable-5", MAR) == [("entitled", "e-org")]
    assert h.reasons("u-1", "fable-5", AT) == [("no_entitlement", None)]


def test_org_entitlement_of_another_org_does_not_entitle(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        grant("e-org", org="globex", models=["fable-5"]),
        employer("u-1", "acme"),
    )
    assert h.reasons("u-1", "fable-5", AT) == [("no_entitlement", None)]


def test_changing_employer_moves_the_org_entitlement(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        grant("e-acme", org="acme", models=["fable-5"]),
        grant("e-globex", org="globex", models=["fable-5"]),
        employer("u-1", "acme"),
        employer("u-1", "globex", valid_from=APR),
    )
    assert h.reasons("u-1", "fable-5", MAR) == [("entitled", "e-acme")]
    assert h.reasons("u-1", "fable-5", AT) == [("entitled", "e-globex")]


# --- 3. directives and three-valued subject predicates -----------------------------------------


def test_directive_denies_the_subjects_it_covers(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5", "mythos-5"], subjects=FOREIGN))
    decision = world.decide("de", "fable-5", AT)
    assert decision["effect"] == "deny"
    assert decision["reasons"] == [{"code": "directive", "ref": "bis"}]
    assert world.reasons("us", "fable-5", AT) == ALLOWED_US


def test_directive_leaves_other_models_alone(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5", "mythos-5"], subjects=FOREIGN))
    assert world.reasons("de", "fable-4", AT) == [("entitled", "e-de")]


def test_every_applicable_deny_directive_is_a_reason(world: Harness) -> None:
    world.apply(
        directive("d-b", models=["fable-5"], subjects=FOREIGN),
        directive("d-a", models=["*"], subjects={"everyone": True}),
        directive("d-c", models=["fable-5"], subjects={"citizenship": {"any_of": ["US"]}}),
    )
    assert world.reasons("de", "fable-5", AT) == [directive_reason("d-a"), directive_reason("d-b")]


def test_unknown_attribute_applies_directive_by_default(world: Harness) -> None:
    """on_unknown defaults to apply: fail closed, naming the unknown attribute."""
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN))
    decision = world.decide("anon", "fable-5", AT)
    assert decision["effect"] == "deny"
    assert decision["reasons"] == [
        {"code": "directive", "ref": "bis"},
        {"code": "unknown_attribute", "ref": "citizenship"},
    ]


def test_unknown_attribute_with_on_unknown_apply(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN, on_unknown="apply"))
    assert world.reasons("anon", "fable-5", AT) == [
        directive_reason("bis"),
        ("unknown_attribute", "citizenship"),
    ]


def test_unknown_attribute_with_on_unknown_not_apply_allows(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN, on_unknown="ignore"))
    assert world.reasons("anon", "fable-5", AT) == [("entitled", "e-anon")]
    assert world.reasons("de", "fable-5", AT) == [directive_reason("bis")]


def test_known_attribute_does_not_name_unknown_attribute(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN))
    assert ("unknown_attribute", "citizenship") not in world.reasons("de", "fable-5", AT)


def test_us_person_is_named_as_the_unknown_attribute(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects={"us_person": False}))
    assert world.reasons("anon", "fable-5", AT) == [
        directive_reason("bis"),
        ("unknown_attribute", "us_person"),
    ]


def test_us_person_includes_us_permanent_residents(world: Harness) -> None:
    world.apply(
        nationality("greencard", ["IN"], ["US"]),
        grant("e-gc", subject="greencard"),
        directive("bis", models=["fable-5"], subjects={"us_person": False}),
    )
    assert world.reasons("greencard", "fable-5", AT) == [("entitled", "e-gc")]
    assert world.reasons("us", "fable-5", AT) == ALLOWED_US
    assert world.reasons("de", "fable-5", AT) == [directive_reason("bis")]


def test_dual_national_meets_citizenship_any_of_either(world: Harness) -> None:
    world.apply(
        nationality("dual", ["US", "DE"]),
        grant("e-dual", subject="dual"),
        directive("de-only", models=["fable-5"], subjects={"citizenship": {"any_of": ["DE"]}}),
        directive("foreign", models=["mythos-5"], subjects=FOREIGN),
    )
    assert world.reasons("dual", "fable-5", AT) == [directive_reason("de-only")]
    assert world.reasons("dual", "mythos-5", AT) == [("entitled", "e-dual")]


def test_unknown_is_carried_through_any_and_all(world: Harness) -> None:
    """any(unknown, false) is unknown; any(unknown, true) is true and names nothing unknown."""
    world.apply(
        location("anon", "FR"),
        nationality("cn", ["FR"]),
        location("cn", "CN"),
        grant("e-cn", subject="cn"),
        directive(
            "d",
            models=["fable-5"],
            subjects={"any": [FOREIGN, {"location": {"any_of": ["CN"]}}]},
        ),
    )
    assert world.reasons("anon", "fable-5", AT) == [
        directive_reason("d"),
        ("unknown_attribute", "citizenship"),
    ]
    world.apply(location("anon", "CN", valid_from=MAR))
    assert world.reasons("anon", "fable-5", AT) == [directive_reason("d")]


def test_unknown_is_carried_through_not(world: Harness) -> None:
    world.apply(
        directive("d", models=["fable-5"], subjects={"not": {"citizenship": {"any_of": ["US"]}}})
    )
    assert world.reasons("anon", "fable-5", AT) == [
        directive_reason("d"),
        ("unknown_attribute", "citizenship"),
    ]
    assert world.reasons("us", "fable-5", AT) == ALLOWED_US


def test_all_with_a_false_part_is_false_despite_unknowns(world: Harness) -> None:
    world.apply(
        location("anon", "FR"),
        directive(
            "d",
            models=["fable-5"],
            subjects={"all": [FOREIGN, {"location": {"any_of": ["CN"]}}]},
        ),
    )
    assert world.reasons("anon", "fable-5", AT) == [("entitled", "e-anon")]


def test_every_unknown_attribute_the_predicate_met_is_named(world: Harness) -> None:
    world.apply(
        directive(
            "d",
            models=["fable-5"],
            subjects={"all": [FOREIGN, {"location": {"none_of": ["US"]}}, {"us_person": False}]},
        )
    )
    assert world.reasons("anon", "fable-5", AT) == [
        directive_reason("d"),
        ("unknown_attribute", "citizenship"),
        ("unknown_attribute", "location"),
        ("unknown_attribute", "us_person"),
    ]


def test_location_from_context_overrides_the_attestation(world: Harness) -> None:
    world.apply(
        location("us", "CN"),
        directive("geo", models=["fable-5"], subjects={"location": {"any_of": ["CN"]}}),
    )
    assert world.reasons("us", "fable-5", AT) == [directive_reason("geo")]
    assert world.reasons("us", "fable-5", AT, location="FR") == ALLOWED_US
    world.apply(location("de", "FR"))
    assert world.reasons("de", "fable-5", AT, location="CN") == [directive_reason("geo")]


def test_location_from_context_makes_location_known(world: Harness) -> None:
    world.apply(directive("geo", models=["fable-5"], subjects={"location": {"any_of": ["CN"]}}))
    assert world.reasons("us", "fable-5", AT) == [
        directive_reason("geo"),
        ("unknown_attribute", "location"),
    ]
    assert world.reasons("us", "fable-5", AT, location="FR") == ALLOWED_US


def test_purpose_comes_only_from_the_request_context(world: Harness) -> None:
    world.apply(
        directive("dual-use", models=["fable-5"], subjects={"purpose": {"any_of": ["bio"]}})
    )
    assert world.reasons("us", "fable-5", AT) == [
        directive_reason("dual-use"),
        ("unknown_attribute", "purpose"),
    ]
    assert world.reasons("us", "fable-5", AT, purpose="research") == ALLOWED_US
    assert world.reasons("us", "fable-5", AT, purpose="bio") == [directive_reason("dual-use")]


def test_subject_attribute_is_always_known(world: Harness) -> None:
    world.apply(directive("d", models=["fable-5"], subjects={"subject": {"any_of": ["anon"]}}))
    assert world.reasons("anon", "fable-5", AT) == [directive_reason("d")]
    assert world.reasons("us", "fable-5", AT) == ALLOWED_US


def test_employer_attribute_in_a_predicate(world: Harness) -> None:
    world.apply(
        employer("us", "acme"),
        directive("d", models=["fable-5"], subjects={"employer": {"any_of": ["acme"]}}),
    )
    assert world.reasons("us", "fable-5", AT) == [directive_reason("d")]
    assert world.reasons("de", "fable-5", AT) == [
        directive_reason("d"),
        ("unknown_attribute", "employer"),
    ]


# --- superseding attestations -------------------------------------------------------------------


def test_later_valid_from_supersedes_from_its_valid_from(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        nationality("u-1", ["DE"], valid_from=JAN),
        nationality("u-1", ["US"], valid_from=MAR),
        grant("e-1", subject="u-1"),
    )
    assert world.reasons("u-1", "fable-5", FEB) == [directive_reason("bis")]
    assert world.reasons("u-1", "fable-5", AT) == [("entitled", "e-1")]


def test_later_valid_from_wins_even_when_recorded_first(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        nationality("u-1", ["US"], valid_from=MAR),
        nationality("u-1", ["DE"], valid_from=JAN),
        grant("e-1", subject="u-1"),
    )
    assert world.reasons("u-1", "fable-5", FEB) == [directive_reason("bis")]
    assert world.reasons("u-1", "fable-5", AT) == [("entitled", "e-1")]


def test_equal_valid_from_later_recorded_wins(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        grant("e-1", subject="u-1"),
        grant("e-2", subject="u-2"),
        nationality("u-1", ["US"], valid_from=FEB),
        nationality("u-1", ["DE"], valid_from=FEB),
        nationality("u-2", ["DE"], valid_from=FEB),
        nationality("u-2", ["US"], valid_from=FEB),
    )
    assert world.reasons("u-1", "fable-5", AT) == [directive_reason("bis")]
    assert world.reasons("u-2", "fable-5", AT) == [("entitled", "e-2")]


def test_expired_winner_leaves_unknown_and_does_not_revive_the_older(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        grant("e-1", subject="u-1"),
        nationality("u-1", ["DE"], valid_from=JAN),
        nationality("u-1", ["US"], valid_from=MAR, valid_until=MAY),
    )
    assert world.reasons("u-1", "fable-5", FEB) == [directive_reason("bis")]
    assert world.reasons("u-1", "fable-5", APR) == [("entitled", "e-1")]
    assert world.reasons("u-1", "fable-5", MAY) == [
        directive_reason("bis"),
        ("unknown_attribute", "citizenship"),
    ]


def test_revoked_winner_leaves_unknown_and_does_not_revive_the_older(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN, on_unknown="ignore"),
        grant("e-1", subject="u-1"),
        nationality("u-1", ["DE"], valid_from=JAN),
        nationality("u-1", ["FR"], valid_from=MAR),
        revoke_attestation("u-1", "nationality", MAY),
    )
    assert world.reasons("u-1", "fable-5", APR) == [directive_reason("bis")]
    # unknown, and this directive does not apply on unknown: the older DE is not revived
    assert world.reasons("u-1", "fable-5", AT) == [("entitled", "e-1")]


def test_attestation_revocation_effective_at_is_respected(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        revoke_attestation("de", "nationality", APR),
    )
    assert world.reasons("de", "fable-5", MAR) == [directive_reason("bis")]
    assert world.reasons("de", "fable-5", APR) == [
        directive_reason("bis"),
        ("unknown_attribute", "citizenship"),
    ]


def test_attestation_recorded_after_a_revocation_is_in_force(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        revoke_attestation("de", "nationality", MAR),
        nationality("de", ["US"], valid_from=APR),
    )
    assert world.reasons("de", "fable-5", MAR) == [
        directive_reason("bis"),
        ("unknown_attribute", "citizenship"),
    ]
    assert world.reasons("de", "fable-5", AT) == [("entitled", "e-de")]


def test_expired_location_attestation_leaves_location_unknown(world: Harness) -> None:
    world.apply(
        location("us", "FR", valid_until=MAR),
        directive("geo", models=["fable-5"], subjects={"location": {"any_of": ["CN"]}}),
    )
    assert world.reasons("us", "fable-5", FEB) == ALLOWED_US
    assert world.reasons("us", "fable-5", AT) == [
        directive_reason("geo"),
        ("unknown_attribute", "location"),
    ]


def test_attestation_kinds_supersede_independently(world: Harness) -> None:
    """A location attestation does not supersede a nationality attestation."""
    world.apply(
        location("de", "US", valid_from=MAR),
        directive("bis", models=["fable-5"], subjects=FOREIGN),
    )
    assert world.reasons("de", "fable-5", AT) == [directive_reason("bis")]


# --- exemptions -------------------------------------------------------------------------------


def test_exemption_by_subject(world: Harness) -> None:
    world.apply(
        nationality("de-2", ["DE"]),
        grant("e-de-2", subject="de-2"),
        directive(
            "bis", models=["fable-5"], subjects=FOREIGN, exempt={"subjects": ["de"], "orgs": []}
        ),
    )
    assert world.reasons("de", "fable-5", AT) == [("entitled", "e-de")]
    assert world.reasons("de-2", "fable-5", AT) == [directive_reason("bis")]


def test_exemption_by_known_employer(world: Harness) -> None:
    world.apply(
        employer("de", "acme"),
        directive(
            "bis", models=["fable-5"], subjects=FOREIGN, exempt={"subjects": [], "orgs": ["acme"]}
        ),
    )
    assert world.reasons("de", "fable-5", AT) == [("entitled", "e-de")]


def test_exemption_by_employer_only_while_employed(world: Harness) -> None:
    world.apply(
        employer("de", "acme", valid_until=MAR),
        directive(
            "bis", models=["fable-5"], subjects=FOREIGN, exempt={"subjects": [], "orgs": ["acme"]}
        ),
    )
    assert world.reasons("de", "fable-5", FEB) == [("entitled", "e-de")]
    assert world.reasons("de", "fable-5", AT) == [directive_reason("bis")]


def test_unknown_employer_does_not_exempt(world: Harness) -> None:
    world.apply(
        directive(
            "bis", models=["fable-5"], subjects=FOREIGN, exempt={"subjects": [], "orgs": ["acme"]}
        )
    )
    assert world.reasons("de", "fable-5", AT) == [directive_reason("bis")]


def test_other_employer_does_not_exempt(world: Harness) -> None:
    world.apply(
        employer("de", "globex"),
        directive(
            "bis", models=["fable-5"], subjects=FOREIGN, exempt={"subjects": [], "orgs": ["acme"]}
        ),
    )
    assert world.reasons("de", "fable-5", AT) == [directive_reason("bis")]


def test_exemption_skips_the_directive_before_its_predicate(world: Harness) -> None:
    """An exempt subject is not denied even when the predicate is unknown for them."""
    world.apply(
        directive(
            "bis", models=["fable-5"], subjects=FOREIGN, exempt={"subjects": ["anon"], "orgs": []}
        )
    )
    assert world.reasons("anon", "fable-5", AT) == [("entitled", "e-anon")]


def test_employees_of_the_company_are_covered_unless_exempt(h: Harness) -> None:
    """The 5:21 p.m. order: foreign nationals lose access, the company's own included."""
    h.apply(
        register("fable-5", "fable"),
        register("opus-4", "opus"),
        grant("e-org", org="interlock-ai", models=["*"]),
        employer("emp-de", "interlock-ai"),
        nationality("emp-de", ["DE"]),
        employer("emp-us", "interlock-ai"),
        nationality("emp-us", ["US"]),
        employer("emp-anon", "interlock-ai"),
        directive("bis", models=["fable-5"], subjects=FOREIGN, effective_at=MAR),
    )
    assert h.reasons("emp-de", "fable-5", AT) == [directive_reason("bis")]
    assert h.reasons("emp-anon", "fable-5", AT) == [
        directive_reason("bis"),
        ("unknown_attribute", "citizenship"),
    ]
    assert h.reasons("emp-us", "fable-5", AT) == [("entitled", "e-org")]
    assert h.reasons("emp-de", "opus-4", AT) == [("entitled", "e-org")]
    assert h.reasons("emp-de", "fable-5", FEB) == [("entitled", "e-org")]


# --- directive validity: effective_at, expiry, lift ----------------------------------------------


def test_directive_is_inactive_before_its_effective_at(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN, effective_at=MAR))
    assert world.reasons("de", "fable-5", FEB) == [("entitled", "e-de")]
    assert world.reasons("de", "fable-5", MAR) == [directive_reason("bis")]


def test_directive_effective_at_defaults_to_received_at(world: Harness) -> None:
    world.apply(
        directive(
            "bis",
            models=["fable-5"],
            subjects=FOREIGN,
            effective_at=None,
            received_at="2026-03-01T12:00:00-05:00",
        ),
        recorded_at=APR,
    )
    assert world.effect("de", "fable-5", "2026-03-01T16:59:59+00:00") == "allow"
    assert world.effect("de", "fable-5", "2026-03-01T17:00:00+00:00") == "deny"


def test_directive_received_at_defaults_to_recorded_time(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN, effective_at=None), recorded_at=MAR
    )
    assert world.effect("de", "fable-5", FEB) == "allow"
    assert world.effect("de", "fable-5", MAR) == "deny"


def test_directive_is_active_before_expiry_and_not_after(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN, expires_at=APR))
    assert world.reasons("de", "fable-5", MAR) == [directive_reason("bis")]
    assert world.reasons("de", "fable-5", APR) == [("entitled", "e-de")]
    assert world.reasons("de", "fable-5", AT) == [("entitled", "e-de")]


def test_lifted_directive_is_active_before_the_lift_and_not_after(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN))
    world.apply(lift("bis", APR), recorded_at=MAR)
    assert world.reasons("de", "fable-5", MAR) == [directive_reason("bis")]
    assert world.reasons("de", "fable-5", APR) == [("entitled", "e-de")]


def test_lift_counts_from_its_position_not_from_its_effective_time(world: Harness) -> None:
    """A lift recorded late but effective early: as known before it, the directive held."""
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN))
    before_lift = world.position
    world.apply(lift("bis", MAR), recorded_at=JUN)
    assert world.reasons("de", "fable-5", APR) == [("entitled", "e-de")]
    assert world.reasons("de", "fable-5", APR, as_of=before_lift) == [directive_reason("bis")]


def test_lift_effective_at_defaults_to_recorded_time(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN))
    world.apply(lift("bis"), recorded_at=APR)
    assert world.effect("de", "fable-5", MAR) == "deny"
    assert world.effect("de", "fable-5", APR) == "allow"


# --- amendments ---------------------------------------------------------------------------------


def test_amendment_applies_from_its_effective_at_on(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        amend("bis", APR, exempt={"subjects": ["de"], "orgs": []}),
    )
    assert world.reasons("de", "fable-5", MAR) == [directive_reason("bis")]
    assert world.reasons("de", "fable-5", APR) == [("entitled", "e-de")]


def test_amendment_replaces_only_the_fields_it_carries(world: Harness) -> None:
    """Amending the models keeps the subjects predicate, and vice versa."""
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        amend("bis", APR, models=["mythos-5"]),
    )
    assert world.reasons("de", "fable-5", AT) == [("entitled", "e-de")]
    assert world.reasons("de", "mythos-5", AT) == [directive_reason("bis")]
    assert world.reasons("us", "mythos-5", AT) == ALLOWED_US
    world.apply(amend("bis", MAY, subjects={"everyone": True}))
    assert world.reasons("us", "mythos-5", AT) == [directive_reason("bis")]
    assert world.reasons("us", "fable-5", AT) == ALLOWED_US
    assert world.reasons("us", "mythos-5", APR) == ALLOWED_US


def test_amendments_accumulate_in_effective_order(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        amend("bis", MAY, exempt={"subjects": [], "orgs": []}),
        amend("bis", MAR, exempt={"subjects": ["de"], "orgs": []}),
    )
    assert world.effect("de", "fable-5", FEB) == "deny"
    assert world.effect("de", "fable-5", APR) == "allow"
    assert world.effect("de", "fable-5", AT) == "deny"


def test_amendment_is_not_known_before_its_position(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN))
    before = world.position
    world.apply(amend("bis", MAR, exempt={"subjects": ["de"], "orgs": []}), recorded_at=JUN)
    assert world.effect("de", "fable-5", APR) == "allow"
    assert world.effect("de", "fable-5", APR, as_of=before) == "deny"


def test_amendment_effective_at_defaults_to_recorded_time(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN))
    world.apply(amend("bis", exempt={"subjects": ["de"], "orgs": []}), recorded_at=APR)
    assert world.effect("de", "fable-5", MAR) == "deny"
    assert world.effect("de", "fable-5", APR) == "allow"


def test_amendment_can_set_an_expiry(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        amend("bis", MAR, expires_at=MAY),
    )
    assert world.effect("de", "fable-5", APR) == "deny"
    assert world.effect("de", "fable-5", MAY) == "allow"


def test_amendment_of_on_unknown(world: Harness) -> None:
    world.apply(
        directive("bis", models=["fable-5"], subjects=FOREIGN),
        amend("bis", APR, on_unknown="ignore"),
    )
    assert world.effect("anon", "fable-5", MAR) == "deny"
    assert world.effect("anon", "fable-5", AT) == "allow"
    assert world.effect("de", "fable-5", AT) == "deny"


# --- 4. routes ----------------------------------------------------------------------------------


def test_route_directive_routes_to_its_target(world: Harness) -> None:
    world.apply(
        directive(
            "r", models=["fable-5"], subjects=FOREIGN, effect="route", route_to="fable-4",
            disclose=True,
        )
    )
    decision = world.decide("de", "fable-5", AT)
    assert decision["effect"] == "route"
    assert decision["route_to"] == "fable-4"
    assert decision["disclosed"] is True
    assert decision["reasons"] == [{"code": "route", "ref": "r"}]
    assert world.reasons("us", "fable-5", AT) == ALLOWED_US


def test_route_disclosed_false(world: Harness) -> None:
    world.apply(
        directive(
            "r", models=["fable-5"], subjects=FOREIGN, effect="route", route_to="fable-4",
            disclose=False,
        )
    )
    decision = world.decide("de", "fable-5", AT)
    assert (decision["effect"], decision["disclosed"]) == ("route", False)


def test_route_disclosed_as_the_first_directive_says(world: Harness) -> None:
    world.apply(
        directive(
            "r1", models=["fable-5"], subjects=FOREIGN, effect="route", route_to="fable-4",
            disclose=True,
        ),
        directive(
            "r2", models=["fable-4"], subjects=FOREIGN, effect="route", route_to="mythos-5",
            disclose=False,
        ),
    )
    decision = world.decide("de", "fable-5", AT)
    assert (decision["effect"], decision["route_to"], decision["disclosed"]) == (
        "route", "mythos-5", True,
    )
    assert world.reasons("de", "fable-5", AT) == [("route", "r1"), ("route", "r2")]
    decision = world.decide("de", "fable-4", AT)
    assert (decision["route_to"], decision["disclosed"]) == ("mythos-5", False)


def test_route_applied_on_unknown_names_the_unknown_attribute(world: Harness) -> None:
    world.apply(
        directive("r", models=["fable-5"], subjects=FOREIGN, effect="route", route_to="fable-4")
    )
    decision = world.decide("anon", "fable-5", AT)
    assert (decision["effect"], decision["route_to"]) == ("route", "fable-4")
    assert world.reasons("anon", "fable-5", AT) == [
        ("route", "r"),
        ("unknown_attribute", "citizenship"),
    ]


def test_route_target_is_judged_by_the_same_rule_entitlement(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"),
        register("fable-4", "fable"),
        grant("e-1", subject="u-1", models=["fable-5"]),
        directive("r", models=["fable-5"], effect="route", route_to="fable-4"),
    )
    decision = h.decide("u-1", "fable-5", AT)
    assert decision["effect"] == "deny"
    assert decision["route_to"] is None
    assert h.reasons("u-1", "fable-5", AT) == [
        ("no_entitlement", None),
        ("route_target_denied", "fable-4"),
    ]


def test_route_target_denied_by_a_directive(world: Harness) -> None:
    world.apply(
        directive("r", models=["fable-5"], subjects=FOREIGN, effect="route", route_to="fable-4"),
        directive("bis", models=["fable-4"], subjects=FOREIGN),
    )
    assert world.reasons("de", "fable-5", AT) == [
        directive_reason("bis"),
        ("route_target_denied", "fable-4"),
    ]


def test_route_target_withdrawn(world: Harness) -> None:
    world.apply(
        directive("r", models=["fable-5"], subjects=FOREIGN, effect="route", route_to="fable-4"),
        withdraw("fable-4", MAR),
    )
    assert world.reasons("de", "fable-5", AT) == [
        ("model_withdrawn", None),
        ("route_target_denied", "fable-4"),
    ]


def test_route_target_denied_names_the_denied_model_in_a_chain(world: Harness) -> None:
    world.apply(
        directive("r1", models=["fable-5"], effect="route", route_to="fable-4"),
        directive("r2", models=["fable-4"], effect="route", route_to="mythos-5"),
        directive("bis", models=["mythos-5"], subjects=FOREIGN),
    )
    assert world.reasons("de", "fable-5", AT) == [
        directive_reason("bis"),
        ("route_target_denied", "mythos-5"),
    ]
    assert world.decide("us", "fable-5", AT)["route_to"] == "mythos-5"


def test_route_cycle_between_two_models(world: Harness) -> None:
    world.apply(
        directive("r1", models=["fable-5"], effect="route", route_to="fable-4"),
        directive("r2", models=["fable-4"], effect="route", route_to="fable-5"),
    )
    decision = world.decide("us", "fable-5", AT)
    assert decision["effect"] == "deny"
    assert decision["route_to"] is None
    assert {"code": "route_cycle", "ref": None} in decision["reasons"]


def test_route_to_itself_is_a_cycle(world: Harness) -> None:
    world.apply(directive("r", models=["fable-5"], effect="route", route_to="fable-5"))
    decision = world.decide("us", "fable-5", AT)
    assert decision["effect"] == "deny"
    assert {"code": "route_cycle", "ref": None} in decision["reasons"]


def _chain(h: Harness, hops: int) -> None:
    """m0 -> m1 -> ... -> m{hops}, each hop its own route directive `r{i}`."""
    h.apply(*(register(f"m{i}", "chain") for i in range(hops + 1)))
    h.apply(grant("e-1", subject="u-1", models=["family:chain"]))
    h.apply(
        *(
            directive(f"r{i}", models=[f"m{i}"], effect="route", route_to=f"m{i + 1}")
            for i in range(hops)
        )
    )


def test_route_chain_of_three_hops_succeeds(h: Harness) -> None:
    _chain(h, 3)
    decision = h.decide("u-1", "m0", AT)
    assert (decision["effect"], decision["route_to"]) == ("route", "m3")
    assert h.reasons("u-1", "m0", AT) == [("route", "r0"), ("route", "r1"), ("route", "r2")]


def test_route_chain_of_four_hops_is_a_route_cycle(h: Harness) -> None:
    _chain(h, 4)
    decision = h.decide("u-1", "m0", AT)
    assert decision["effect"] == "deny"
    assert decision["route_to"] is None
    assert {"code": "route_cycle", "ref": None} in decision["reasons"]
    # one hop shorter, from m1: fine
    assert h.decide("u-1", "m1", AT)["route_to"] == "m4"


def test_deny_beats_route(world: Harness) -> None:
    world.apply(
        directive("a-route", models=["fable-5"], effect="route", route_to="fable-4"),
        directive("z-deny", models=["fable-5"], subjects=FOREIGN),
    )
    decision = world.decide("de", "fable-5", AT)
    assert decision["effect"] == "deny"
    assert decision["route_to"] is None
    assert decision["reasons"] == [{"code": "directive", "ref": "z-deny"}]
    assert world.decide("us", "fable-5", AT)["route_to"] == "fable-4"


def test_earliest_effective_route_wins(world: Harness) -> None:
    world.apply(
        directive("r-a", models=["fable-5"], effect="route", route_to="mythos-5",
                  effective_at=FEB),
        directive("r-b", models=["fable-5"], effect="route", route_to="fable-4",
                  effective_at=JAN),
    )
    assert world.decide("us", "fable-5", AT)["route_to"] == "fable-4"
    assert world.reasons("us", "fable-5", AT) == [("route", "r-b")]


def test_equal_effective_route_the_lower_id_wins(world: Harness) -> None:
    world.apply(
        directive("r-b", models=["fable-5"], effect="route", route_to="fable-4"),
        directive("r-a", models=["fable-5"], effect="route", route_to="mythos-5"),
    )
    assert world.decide("us", "fable-5", AT)["route_to"] == "mythos-5"
    assert world.reasons("us", "fable-5", AT) == [("route", "r-a")]


def test_route_needs_an_entitlement_to_the_routed_model(h: Harness) -> None:
    """Step 2 comes before step 4: no entitlement to the asked model is no_entitlement."""
    h.apply(
        register("fable-5", "fable"),
        register("fable-4", "fable"),
        grant("e-1", subject="u-1", models=["fable-4"]),
        directive("r", models=["fable-5"], effect="route", route_to="fable-4"),
    )
    assert h.reasons("u-1", "fable-5", AT) == [("no_entitlement", None)]


# --- reasons and the normative JSON ------------------------------------------------------------


def test_reasons_are_sorted_by_code_then_ref(world: Harness) -> None:
    world.apply(
        directive("d-b", models=["fable-5"], subjects={"location": {"any_of": ["CN"]}}),
        directive("d-a", models=["fable-5"], subjects=FOREIGN),
    )
    assert world.reasons("anon", "fable-5", AT) == [
        ("directive", "d-a"),
        ("directive", "d-b"),
        ("unknown_attribute", "citizenship"),
        ("unknown_attribute", "location"),
    ]


def test_reasons_sort_null_ref_first() -> None:
    reasons = sorted_reasons([Reason("x", "b"), Reason("x"), Reason("x", "a"), Reason("a", "z")])
    assert reasons == (Reason("a", "z"), Reason("x"), Reason("x", "a"), Reason("x", "b"))


def test_equal_reasons_are_named_once(world: Harness) -> None:
    world.apply(
        directive("d-a", models=["fable-5"], subjects=FOREIGN),
        directive("d-b", models=["fable-5"], subjects={"not": {"citizenship": {"any_of": ["US"]}}}),
    )
    assert world.reasons("anon", "fable-5", AT) == [
        ("directive", "d-a"),
        ("directive", "d-b"),
        ("unknown_attribute", "citizenship"),
    ]


def test_decision_json_has_the_normative_shape(world: Harness) -> None:
    world.apply(
        directive(
            "bis-2026-0417", models=["fable-5", "mythos-5"], subjects=FOREIGN,
            received_at="2026-11-26T17:21:00-05:00", effective_at=None, disclose=True,
        ),
        recorded_at="2026-11-26T22:21:00+00:00",
    )
    decision = world.decide("anon", "fable-5", "2026-11-26T17:21:00-05:00")
    assert decision == {
        "subject": "anon",
        "model": "fable-5",
        "effect": "deny",
        "route_to": None,
        "disclosed": False,
        "reasons": [
            {"code": "directive", "ref": "bis-2026-0417"},
            {"code": "unknown_attribute", "ref": "citizenship"},
        ],
        "at": "2026-11-26T22:21:00+00:00",
        "as_of": world.position,
    }
    assert json.loads(json.dumps(decision)) == decision


def test_decision_at_is_rendered_in_utc(world: Harness) -> None:
    assert world.decide("us", "fable-5", "2026-06-01T02:00:00+02:00")["at"] == (
        "2026-06-01T00:00:00+00:00"
    )


def test_decision_json_effects_and_types(world: Harness) -> None:
    world.apply(directive("r", models=["fable-5"], effect="route", route_to="fable-4"))
    for model, effect in (("fable-5", "route"), ("fable-4", "allow"), ("nope", "deny")):
        decision = world.decide("us", model, AT)
        assert decision["effect"] == effect
        assert isinstance(decision["as_of"], int)
        assert isinstance(decision["disclosed"], bool)
        assert all(set(r) == {"code", "ref"} for r in decision["reasons"])


# --- as_of and known_at ------------------------------------------------------------------------


def test_as_of_an_old_position_ignores_later_events(world: Harness) -> None:
    before = world.position
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN, effective_at=JAN))
    assert world.reasons("de", "fable-5", AT) == [directive_reason("bis")]
    old = world.decide("de", "fable-5", AT, as_of=before)
    assert old["reasons"] == [{"code": "entitled", "ref": "e-de"}]
    assert old["as_of"] == before


def test_as_of_zero_knows_nothing(world: Harness) -> None:
    assert world.reasons("us", "fable-5", AT, as_of=0) == [("unknown_model", None)]


def test_as_of_beyond_the_index_is_the_current_decision(world: Harness) -> None:
    decision = world.decide("us", "fable-5", AT, as_of=world.position + 100)
    assert decision["effect"] == "allow"


def test_as_of_position_inside_a_history_of_attestations(world: Harness) -> None:
    world.apply(directive("bis", models=["fable-5"], subjects=FOREIGN))
    p_de = world.position
    world.apply(nationality("de", ["US"], valid_from=FEB))
    assert world.effect("de", "fable-5", AT) == "allow"
    assert world.effect("de", "fable-5", AT, as_of=p_de) == "deny"


def test_known_at_maps_a_recorded_time_to_the_last_position_recorded_by_then(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), grant("e-1", subject="u-1"), recorded_at=JAN)
    p_jan = h.position
    h.apply(directive("d", models=["fable-5"]), recorded_at=MAR)
    p_mar = h.position
    h.apply(lift("d", APR), recorded_at=MAY)

    at_feb = h.decide("u-1", "fable-5", MAR, known_at=FEB)
    assert (at_feb["effect"], at_feb["as_of"]) == ("allow", p_jan)
    at_mar = h.decide("u-1", "fable-5", AT, known_at=MAR)
    assert (at_mar["effect"], at_mar["as_of"]) == ("deny", p_mar)
    at_apr = h.decide("u-1", "fable-5", AT, known_at="2026-04-30T23:59:59+00:00")
    assert (at_apr["effect"], at_apr["as_of"]) == ("deny", p_mar)
    now = h.decide("u-1", "fable-5", AT, known_at=JUN)
    assert (now["effect"], now["as_of"]) == ("allow", h.position)


def test_known_at_before_anything_was_recorded_knows_nothing(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), grant("e-1", subject="u-1"), recorded_at=MAR)
    assert h.reasons("u-1", "fable-5", AT, known_at=FEB) == [("unknown_model", None)]


def test_known_at_and_as_of_take_the_earlier(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), recorded_at=JAN)
    p1 = h.position
    h.apply(grant("e-1", subject="u-1"), recorded_at=MAR)
    assert h.decide("u-1", "fable-5", AT, as_of=p1, known_at=JUN)["as_of"] == p1
    assert h.decide("u-1", "fable-5", AT, as_of=h.position, known_at=FEB)["as_of"] == p1
