"""Commands (docs/commands.md): validation, invariants, idempotency.

Malformed commands are refused by `parse_command` with a `CommandError` whose `.field` names
the field; commands that break an invariant are refused by the application with nothing of
them stored (the store position does not move) and nothing else lost.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.aggregates import Directive
from domain.commands import (
    COMMAND_TYPES,
    CommandError,
    canonical_json,
    command_digest,
    parse_command,
    parse_command_json,
)
from domain.terms import DirectiveTerms
from interlock.signing import OfficerKeys, sign_command

from .support import (
    APR,
    FOREIGN,
    JUN,
    MAR,
    Harness,
    amend,
    directive,
    grant,
    lift,
    nationality,
    register,
    revoke_attestation,
    revoke_entitlement,
    ts,
    withdraw,
)

# The design's example command lines, verbatim but for the "..." timestamps, filled in below.
DESIGN_EXAMPLES = r"""
{"type": "register_model", "model": "fable-5", "family": "fable"}
{"type": "withdraw_model", "model": "fable-5", "effective_at": "..."}
{"type": "grant_entitlement", "entitlement": "e-1", "grantee": {"org": "acme"}, "models": ["family:fable"], "valid_from": "...", "valid_until": null}
{"type": "revoke_entitlement", "entitlement": "e-1", "effective_at": "..."}
{"type": "attest_nationality", "subject": "u-1", "citizenships": ["US", "DE"], "residencies": [], "valid_from": "...", "valid_until": null, "source": "passport-kyc", "evidence": "doc-9"}
{"type": "attest_location", "subject": "u-1", "country": "FR", "valid_from": "...", "valid_until": "...", "source": "ip-geo"}
{"type": "attest_employer", "subject": "u-1", "org": "acme", "valid_from": "...", "valid_until": null, "source": "hr-feed"}
{"type": "revoke_attestation", "subject": "u-1", "kind": "nationality", "effective_at": "..."}
{"type": "issue_directive", "directive": "bis-2026-0417", "authority": "US Dept. of Commerce (BIS)", "reference": "letter of 2026-11-26", "received_at": "2026-11-26T17:21:00-05:00", "effective_at": null, "expires_at": null, "models": ["fable-5", "mythos-5"], "subjects": {"citizenship": {"none_of": ["US"]}}, "effect": "deny", "route_to": null, "disclose": true, "exempt": {"subjects": [], "orgs": []}, "on_unknown": "apply"}
{"type": "amend_directive", "directive": "bis-2026-0417", "exempt": {"subjects": ["u-3"], "orgs": []}, "effective_at": "..."}
{"type": "lift_directive", "directive": "bis-2026-0417", "effective_at": "..."}
"""  # noqa: E501

START = "2026-11-26T17:21:00-05:00"
LATER = "2026-11-27T09:00:00+01:00"


def design_examples() -> list[str]:
    lines = []
    for line in DESIGN_EXAMPLES.strip().splitlines():
        line = line.replace('"valid_until": "..."', f'"valid_until": "{LATER}"')
        lines.append(line.replace('"..."', f'"{START}"'))
    return lines


EXAMPLES = design_examples()


@pytest.mark.parametrize("line", EXAMPLES, ids=[json.loads(x)["type"] for x in EXAMPLES])
def test_design_example_line_validates(line: str) -> None:
    command = parse_command_json(line)
    assert command.type == json.loads(line)["type"]


def test_every_command_type_has_a_design_example_or_is_reinstate() -> None:
    """The design shows every command but `reinstate_model` (an addition of ours)."""
    shown = {json.loads(line)["type"] for line in EXAMPLES}
    assert set(COMMAND_TYPES) - shown == {"reinstate_model"}


def test_reinstate_model_validates() -> None:
    command = parse_command({"type": "reinstate_model", "model": "fable-5", "effective_at": START})
    assert command.type == "reinstate_model"


def test_design_example_lines_apply_in_order(h: Harness) -> None:
    """The examples, applied in their order (with mythos-5 registered so the directive's exact
    references resolve), are all accepted and each stores something."""
    h.apply(register("mythos-5", "mythos"), recorded_at="2026-11-26T22:00:00+00:00")
    for line in EXAMPLES:
        before = h.position
        h.engine.app.apply(parse_command_json(line))
        assert h.position > before, line


def test_example_timestamps_are_normalised_to_utc() -> None:
    command = parse_command_json(EXAMPLES[1])
    assert command.effective_at.isoformat() == "2026-11-26T22:21:00+00:00"


def test_z_suffix_is_an_offset() -> None:
    command = parse_command(
        {"type": "withdraw_model", "model": "m", "effective_at": "2026-01-01T00:00:00Z"}
    )
    assert command.effective_at.utcoffset().total_seconds() == 0


def test_optional_fields_have_design_defaults() -> None:
    command = parse_command(
        {"type": "issue_directive", "directive": "d", "models": ["*"],
         "subjects": {"everyone": True}}
    )
    assert command.effect == "deny"
    assert command.on_unknown == "apply"
    assert command.route_to is None
    assert command.effective_at is None


# --- malformed commands --------------------------------------------------------------------


def _field_of(data: Any) -> str:
    with pytest.raises(CommandError) as caught:
        parse_command(data)
    return caught.value.field


@pytest.mark.parametrize("line", EXAMPLES, ids=[json.loads(x)["type"] for x in EXAMPLES])
def test_unknown_field_is_refused_naming_it(line: str) -> None:
    data = json.loads(line)
    data["colour"] = "blue"
    assert _field_of(data) == "colour"


def test_unknown_nested_field_is_refused_naming_its_path() -> None:
    data = grant("e-1", subject="u-1")
    data["grantee"]["team"] = "x"
    assert _field_of(data) == "grantee.team"
    data = directive("d", models=["*"], exempt={"subjects": [], "orgs": [], "teams": []})
    assert _field_of(data) == "exempt.teams"


def test_unknown_type_is_refused_naming_type() -> None:
    assert _field_of({"type": "delete_everything", "model": "fable-5"}) == "type"


def test_missing_type_is_refused_naming_type() -> None:
    assert _field_of({"model": "fable-5", "family": "fable"}) == "type"


def test_non_object_command_is_refused() -> None:
    with pytest.raises(CommandError):
        parse_command(["register_model"])
    with pytest.raises(CommandError):
        parse_command_json("{not json")


TIMESTAMP_FIELDS = [
    ("withdraw_model", {"model": "m"}, "effective_at"),
    ("reinstate_model", {"model": "m"}, "effective_at"),
    ("grant_entitlement", {"entitlement": "e", "grantee": {"subject": "u"}, "models": ["*"]},
     "valid_from"),
    ("grant_entitlement", {"entitlement": "e", "grantee": {"subject": "u"}, "models": ["*"]},
     "valid_until"),
    ("revoke_entitlement", {"entitlement": "e"}, "effective_at"),
    ("attest_nationality", {"subject": "u", "citizenships": ["US"], "source": "s"}, "valid_from"),
    ("attest_nationality", {"subject": "u", "citizenships": ["US"], "source": "s"}, "valid_until"),
    ("attest_location", {"subject": "u", "country": "FR", "source": "s"}, "valid_from"),
    ("attest_employer", {"subject": "u", "org": "acme", "source": "s"}, "valid_until"),
    ("revoke_attestation", {"subject": "u", "kind": "location"}, "effective_at"),
    ("issue_directive", {"directive": "d", "models": ["*"], "subjects": {"everyone": True}},
     "received_at"),
    ("issue_directive", {"directive": "d", "models": ["*"], "subjects": {"everyone": True}},
     "effective_at"),
    ("issue_directive", {"directive": "d", "models": ["*"], "subjects": {"everyone": True}},
     "expires_at"),
    ("amend_directive", {"directive": "d", "on_unknown": "ignore"}, "effective_at"),
    ("amend_directive", {"directive": "d"}, "expires_at"),
    ("lift_directive", {"directive": "d"}, "effective_at"),
]


@pytest.mark.parametrize(
    ("kind", "body", "field"), TIMESTAMP_FIELDS, ids=[f"{k}.{f}" for k, _, f in TIMESTAMP_FIELDS]
)
@pytest.mark.parametrize("naive", ["2026-11-26T17:21:00", "2026-11-26 17:21:00"])
def test_timestamp_without_offset_is_refused_naming_it(
    kind: str, body: dict[str, Any], field: str, naive: str
) -> None:
    assert _field_of({"type": kind, **body, field: naive}) == field
    # and with an offset it is fine
    parse_command({"type": kind, **body, field: naive + "+00:00"})


@pytest.mark.parametrize(
    "epoch", [1795734060, "1795734060", 1795734060.5], ids=["int", "str", "float"]
)
def test_unix_epoch_number_is_not_an_iso_timestamp(epoch: Any) -> None:
    assert _field_of({"type": "withdraw_model", "model": "m", "effective_at": epoch}) == (
        "effective_at"
    )


def test_route_directive_without_route_to_is_refused() -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(directive("r", models=["fable-5"], effect="route"))
    assert "route_to" in str(caught.value)


def test_route_directive_without_route_to_names_route_to_as_field() -> None:
    assert _field_of(directive("r", models=["fable-5"], effect="route")) == "route_to"


def test_deny_directive_with_route_to_names_route_to_as_field() -> None:
    assert _field_of(directive("r", models=["fable-5"], route_to="fable-4")) == "route_to"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (grant("e", subject="u", valid_from=APR, valid_until=MAR), "valid_until"),
        (nationality("u", ["US"], valid_from=APR, valid_until=APR), "valid_until"),
        (directive("d", models=["*"], effective_at=APR, expires_at=MAR), "expires_at"),
    ],
    ids=["grant", "attestation", "directive"],
)
def test_interval_ending_before_it_starts_names_the_end_field(
    data: dict[str, Any], field: str
) -> None:
    assert _field_of(data) == field


def test_interval_ending_before_it_starts_is_refused() -> None:
    for data in (
        grant("e", subject="u", valid_from=APR, valid_until=MAR),
        directive("d", models=["*"], effective_at=APR, expires_at=MAR),
    ):
        with pytest.raises(CommandError):
            parse_command(data)


def test_grantee_needs_exactly_one_of_subject_or_org() -> None:
    data = grant("e", subject="u")
    data["grantee"] = {"subject": "u", "org": "acme"}
    assert _field_of(data) == "grantee"
    data["grantee"] = {}
    assert _field_of(data) == "grantee"


@pytest.mark.parametrize(
    "subjects",
    [{"all": []}, {"any": []}, {"nationality": {"any_of": ["US"]}}, {"everyone": False},
     {"citizenship": {"some_of": ["US"]}}, {"us_person": "yes"}, "lambda s: True",
     {"all": [{"everyone": True}], "any": [{"everyone": True}]}],
    ids=["all-empty", "any-empty", "unknown-attr", "everyone-false", "unknown-test",
         "us-person-str", "code", "two-keys"],
)
def test_bad_predicate_is_refused_naming_subjects(subjects: Any) -> None:
    assert _field_of(directive("d", models=["*"], subjects=subjects)) == "subjects"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"type": "register_model", "model": "fable-5"}, "family"),
        (directive("d", models=[]), "models"),
        (directive("d", models=["fable 5"]), "models.0"),
        (directive("d", models=["*"], effect="allow"), "effect"),
        (directive("d", models=["*"], on_unknown="maybe"), "on_unknown"),
        ({"type": "revoke_attestation", "subject": "u", "kind": "shoe-size"}, "kind"),
        ({"type": "attest_location", "subject": "u", "country": "France", "source": "s"},
         "country"),
        (grant("e", subject="u", models=[]), "models"),
    ],
    ids=["missing-family", "no-models", "bad-selector", "bad-effect", "bad-on-unknown",
         "bad-kind", "bad-country", "grant-no-models"],
)
def test_malformed_field_is_named(data: dict[str, Any], field: str) -> None:
    assert _field_of(data) == field


def test_amendment_must_carry_a_term() -> None:
    with pytest.raises(CommandError):
        parse_command({"type": "amend_directive", "directive": "d", "effective_at": APR})


# --- invariants: refused with a named field and nothing stored -----------------------------


@pytest.fixture
def base(h: Harness) -> Harness:
    h.apply(
        register("fable-5", "fable"),
        register("fable-4", "fable"),
        grant("e-1", subject="u-1"),
        nationality("u-1", ["US"]),
        directive("d", models=["fable-5"], subjects=FOREIGN),
    )
    return h


def test_amend_a_lifted_directive_is_refused(base: Harness) -> None:
    base.apply(lift("d", MAR))
    error = base.refuse(amend("d", APR, on_unknown="ignore"))
    assert error.field == "directive"


def test_lift_a_lifted_directive_is_refused(base: Harness) -> None:
    base.apply(lift("d", MAR))
    assert base.refuse(lift("d", APR)).field == "directive"


def test_amend_or_lift_an_unknown_directive_is_refused(base: Harness) -> None:
    assert base.refuse(amend("nope", APR, on_unknown="ignore")).field == "directive"
    assert base.refuse(lift("nope", APR)).field == "directive"


def test_revoke_an_unknown_entitlement_is_refused(base: Harness) -> None:
    assert base.refuse(revoke_entitlement("e-404", APR)).field == "entitlement"


def test_grant_with_an_exact_reference_to_an_unregistered_model_is_refused(base: Harness) -> None:
    error = base.refuse(grant("e-2", subject="u-1", models=["family:fable", "mythos-5"]))
    assert error.field == "models"


def test_grant_with_a_family_or_star_selector_needs_no_registration(base: Harness) -> None:
    before = base.position
    base.apply(grant("e-2", subject="u-1", models=["family:opus", "*"]))
    assert base.position > before


def test_directive_with_an_exact_reference_to_an_unregistered_model_is_refused(
    base: Harness,
) -> None:
    assert base.refuse(directive("d-2", models=["fable-5", "mythos-5"])).field == "models"


def test_directive_route_to_an_unregistered_model_is_refused(base: Harness) -> None:
    error = base.refuse(directive("r", models=["fable-5"], effect="route", route_to="mythos-5"))
    assert error.field == "route_to"


def test_amendment_with_an_exact_reference_to_an_unregistered_model_is_refused(
    base: Harness,
) -> None:
    assert base.refuse(amend("d", APR, models=["mythos-5"])).field == "models"


@pytest.mark.parametrize("target", ["family:fable", "*"])
def test_route_to_must_name_a_registered_model_not_a_selector(base: Harness, target: str) -> None:
    error = base.refuse(directive("r", models=["fable-5"], effect="route", route_to=target))
    assert error.field == "route_to"


def test_amend_to_route_without_route_to_is_refused(base: Harness) -> None:
    error = base.refuse(amend("d", APR, effect="route"))
    assert error.field in ("route_to", "effect")


def test_duplicate_model_is_refused(base: Harness) -> None:
    assert base.refuse(register("fable-5", "other")).field == "model"


def test_duplicate_entitlement_is_refused(base: Harness) -> None:
    assert base.refuse(grant("e-1", subject="u-2")).field == "entitlement"


def test_duplicate_directive_is_refused(base: Harness) -> None:
    assert base.refuse(directive("d", models=["fable-4"])).field == "directive"


def test_withdraw_an_unregistered_model_is_refused(base: Harness) -> None:
    assert base.refuse(withdraw("mythos-5", APR)).field == "model"


def test_revoke_an_attestation_of_an_unknown_subject_is_refused(base: Harness) -> None:
    assert base.refuse(revoke_attestation("u-404", "nationality", APR)).field == "subject"


def test_revoke_an_attestation_kind_never_attested_is_refused(base: Harness) -> None:
    assert base.refuse(revoke_attestation("u-1", "location", APR)).field == "kind"


def test_refused_command_loses_nothing_else(base: Harness) -> None:
    before = base.decide("u-1", "fable-5", JUN)
    base.refuse(grant("e-2", subject="u-1", models=["mythos-5"]))
    assert base.decide("u-1", "fable-5", JUN) == before
    base.apply(register("mythos-5", "mythos"), grant("e-2", subject="u-1", models=["mythos-5"]))
    assert base.reasons("u-1", "mythos-5", JUN) == [("entitled", "e-1"), ("entitled", "e-2")]


# --- command_id idempotency ----------------------------------------------------------------


def test_command_id_makes_a_command_idempotent(h: Harness) -> None:
    first = h.apply(register("fable-5", "fable", command_id="c-1"))
    assert first.applied == 1
    position = h.position
    second = h.apply(register("fable-5", "fable", command_id="c-1"))
    assert h.position == position
    assert second.applied == 0
    assert second.position == position


def test_command_id_seen_twice_in_one_batch_applies_once(h: Harness) -> None:
    result = h.apply_all(
        [
            register("fable-5", "fable"),
            grant("e-1", subject="u-1", command_id="c-grant"),
            grant("e-1", subject="u-1", command_id="c-grant"),
        ]
    )
    assert result.applied == 2
    assert h.reasons("u-1", "fable-5", JUN) == [("entitled", "e-1")]


def test_command_id_of_a_refused_command_is_not_spent(h: Harness) -> None:
    h.refuse(grant("e-1", subject="u-1", models=["fable-5"], command_id="c-1"))
    h.apply(register("fable-5", "fable"))
    before = h.position
    h.apply(grant("e-1", subject="u-1", models=["fable-5"], command_id="c-1"))
    assert h.position > before
    assert h.effect("u-1", "fable-5", JUN) == "allow"


def test_command_without_command_id_is_applied_each_time(h: Harness) -> None:
    h.apply(nationality("u-1", ["US"]))
    position = h.position
    h.apply(nationality("u-1", ["US"]))
    assert h.position > position


# --- apply_all -----------------------------------------------------------------------------


def test_refused_command_in_apply_all_keeps_the_commands_before_it(h: Harness) -> None:
    with pytest.raises(CommandError) as caught:
        h.apply_all(
            [
                register("fable-5", "fable"),
                grant("e-1", subject="u-1", models=["fable-5"]),
                grant("e-2", subject="u-1", models=["mythos-5"]),
                register("mythos-5", "mythos"),
            ]
        )
    assert caught.value.field == "models"
    kept = h.position
    assert kept > 0
    assert h.engine.index.position == kept
    assert h.reasons("u-1", "fable-5", JUN) == [("entitled", "e-1")]
    assert h.reasons("u-1", "mythos-5", JUN) == [("unknown_model", None)]
    # nothing of the refused command: e-2 can still be granted
    h.apply(register("mythos-5", "mythos"), grant("e-2", subject="u-1", models=["mythos-5"]))
    assert h.reasons("u-1", "mythos-5", JUN) == [("entitled", "e-2")]


def test_duplicate_inside_apply_all_is_refused_after_the_first(h: Harness) -> None:
    with pytest.raises(CommandError) as caught:
        h.apply_all([register("fable-5", "fable"), register("fable-5", "fable")])
    assert caught.value.field == "model"
    assert h.reasons("nobody", "fable-5", JUN) == [("no_entitlement", None)]


def test_apply_all_reports_count_and_position(h: Harness) -> None:
    result = h.apply_all([register("fable-5", "fable"), grant("e-1", subject="u-1")])
    assert result.applied == 2
    assert result.position == h.position > 0


def test_apply_all_of_nothing_stores_nothing(h: Harness) -> None:
    result = h.apply_all([])
    assert (result.applied, result.position, h.position) == (0, 0, 0)


# --- one command, one canonical form --------------------------------------------------------


def test_canonical_json_covers_the_command_id_but_not_the_signature() -> None:
    document = directive("d", models=["*"], command_id="c-1")
    canonical = json.loads(canonical_json(parse_command(document)))
    assert canonical["command_id"] == "c-1"
    signed_document = {**document, "signature": {"key_id": "k", "value": "c2ln"}}
    assert canonical_json(parse_command(signed_document)) == canonical_json(
        parse_command(document))


def test_canonical_json_of_an_amendment_keeps_only_the_terms_it_carries() -> None:
    keep_expiry = parse_command(amend("d", APR, on_unknown="ignore"))
    clear_expiry = parse_command(amend("d", APR, on_unknown="ignore", expires_at=None))
    assert "expires_at" not in json.loads(canonical_json(keep_expiry))
    assert json.loads(canonical_json(clear_expiry))["expires_at"] is None


def test_the_digest_ignores_formatting_and_sees_every_change() -> None:
    one = parse_command_json(
        '{"type": "withdraw_model", "model": "fable-5", "command_id": "c-1", '
        '"effective_at": "2026-11-26T17:21:00-05:00"}')
    same = parse_command({"command_id": "c-1", "effective_at": "2026-11-26T22:21:00Z",
                          "model": "fable-5", "type": "withdraw_model"})
    assert command_digest(one) == command_digest(same)
    other = parse_command({**same.model_dump(mode="json"), "type": "reinstate_model"})
    assert command_digest(other) != command_digest(one)


def test_repeats_are_counted(h: Harness) -> None:
    h.apply(register("fable-5", "fable", command_id="c-1"))
    result = h.apply_all([register("fable-5", "fable", command_id="c-1")] * 3)
    assert (result.applied, result.repeated) == (0, 3)


def test_sign_adds_a_fresh_command_id_to_a_directive_command_that_lacks_one() -> None:
    key = Ed25519PrivateKey.generate()
    first = sign_command(lift("d", APR), key, "k-1")
    second = sign_command(lift("d", APR), key, "k-1")
    assert first["command_id"] != second["command_id"]
    assert str(UUID(first["command_id"])) == first["command_id"]
    assert sign_command({**lift("d", APR), "command_id": "c-9"}, key, "k-1")["command_id"] == (
        "c-9")
    assert sign_command(register("m", "f"), key, "k-1") == register("m", "f")
    keys = OfficerKeys({"k-1": key.public_key()})
    assert keys(parse_command(first)) == "k-1"


def test_strings_of_every_script_are_ids_and_country_codes_are_upper_cased() -> None:
    command = parse_command(nationality("Zoë-用户", ["us", " de "]))
    assert (command.subject, command.citizenships) == ("Zoë-用户", ["US", "DE"])


def test_amendment_checks_use_the_terms_in_force_not_only_the_latest(h: Harness) -> None:
    h.apply(
        register("fable-5", "fable"), register("fable-4", "fable"),
        directive("d", models=["fable-5"], effective_at=MAR),
        amend("d", JUN, effect="route", route_to="fable-4"),
    )
    # before JUN the directive denies: a route_to from APR would meet a deny directive
    assert h.refuse(amend("d", APR, route_to="fable-4")).field == "route_to"
    h.apply(amend("d", APR, effect="route", route_to="fable-4"))
    assert h.reasons("u", "fable-5", JUN) == [("no_entitlement", None)]


def test_a_store_written_before_the_input_checks_still_replays(h: Harness) -> None:
    """Stored predicates are read as they were accepted: a directive stored with `DEU` (which
    today's input refuses) replays, and decides as it did (it never matched a German)."""
    h.apply(register("fable-5", "fable"), nationality("de", ["DE"]), grant("e", subject="de"))
    terms = {"models": ["fable-5"], "subjects": {"citizenship": {"any_of": ["DEU"]}},
             "effect": "deny", "route_to": None, "disclose": False,
             "exempt": {"subjects": [], "orgs": []}, "on_unknown": "apply", "expires_at": None}
    stored = Directive.issue("old", "", "", ts(MAR), ts(MAR), DirectiveTerms.from_stored(terms),
                             None, ts(MAR))
    h.engine.app.save(stored)
    h.engine.catch_up()
    assert h.effect("de", "fable-5", JUN) == "allow"
