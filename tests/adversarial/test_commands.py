"""Attacks on the shared input layer (issue 9): what the CLI, HTTP and Kafka intake all parse.

Every case ends in one of two places: a command (or decision request), or a CommandError that
names the field. Cases that get past parsing are then tried through the application, where a
refusal stores nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from domain.aggregates import CommandReceipt, receipt_key
from domain.commands import (
    COMMAND_TYPES,
    CommandConflict,
    CommandError,
    parse_command,
    parse_command_json,
)
from domain.limits import (
    MAX_COMMAND_BYTES,
    MAX_ID_CHARS,
    MAX_LIST_ITEMS,
    MAX_PREDICATE_DEPTH,
    MAX_PREDICATE_NODES,
    MAX_TEXT_CHARS,
)
from domain.queries import DecisionRequest, parse_decision_request_json
from interlock.engine import open_engine
from interlock.signing import OfficerKeys, sign_command
from tests.unit.support import (
    APR,
    FOREIGN,
    JAN,
    JUN,
    MAR,
    MAY,
    Harness,
    amend,
    directive,
    grant,
    nationality,
    register,
)

BASE = {"type": "issue_directive", "directive": "d-1", "models": ["*"],
        "subjects": {"everyone": True}}
ATTEST = {"type": "attest_location", "subject": "u-1", "country": "FR", "source": "ip-geo"}
WITHDRAW = {"type": "withdraw_model", "model": "fable-5"}


def refused(text: str | bytes) -> CommandError:
    with pytest.raises(CommandError) as caught:
        parse_command_json(text)
    return caught.value


def line(base: dict[str, Any], **fields: Any) -> str:
    return json.dumps({**base, **fields})


def nested(key: str, depth: int, leaf: str = '{"everyone": true}') -> str:
    return ('{"' + key + '": ') * depth + leaf + "}" * depth


# --- the JSON itself ---------------------------------------------------------------------

JSON_ATTACKS = [
    ("invalid-utf8", b'{"type": "register_model", "model": "\xff", "family": "f"}', "model"),
    ("truncated-utf8", b'{"type": "register_model", "model": "\xe2\x82", "family": "f"}', "model"),
    ("overlong-utf8", b'{"type": "register_model", "model": "\xc0\xaf", "family": "f"}', "model"),
    ("encoded-surrogate", b'{"type": "register_model", "model": "\xed\xa0\x80", "family": "f"}',
     "model"),
    ("utf16", json.dumps(WITHDRAW).encode("utf-16"), ""),
    ("nan", line(WITHDRAW).replace("}", ', "effective_at": NaN}'), "effective_at"),
    ("infinity", line(WITHDRAW).replace("}", ', "effective_at": -Infinity}'), "effective_at"),
    ("float-overflow", line(WITHDRAW).replace("}", ', "effective_at": 1e999}'), "effective_at"),
    ("huge-integer", line(WITHDRAW).replace("}", ', "effective_at": ' + "9" * 5000 + "}"),
     "effective_at"),
    ("duplicate-key", '{"type": "withdraw_model", "model": "a", "model": "b"}', "model"),
    ("duplicate-type", '{"type": "withdraw_model", "type": "lift_directive", "model": "a"}',
     "type"),
    ("duplicate-nested-key", line(BASE, subjects="@").replace(
        '"@"', '{"citizenship": {"any_of": ["US"], "any_of": ["DE"]}}'),
     "subjects.citizenship.any_of"),
    ("duplicate-disclose", line(BASE).replace("}", ', "disclose": false, "disclose": true}'),
     "disclose"),
    ("deep-arrays", "[" * 30_000 + "]" * 30_000, ""),
    ("deep-objects-in-unknown-field",
     line(WITHDRAW).replace("}", ', "x": ' + nested("a", 5_000, "1") + "}"), ""),
    ("predicate-300-deep", line(BASE, subjects="@").replace('"@"', nested("not", 300)),
     "subjects"),
    ("predicate-10000-deep", line(BASE, subjects="@").replace('"@"', nested("not", 10_000)), ""),
    ("too-large", line(ATTEST, evidence="x" * (2 * 1024 * 1024)), ""),
    ("too-large-bytes", line(ATTEST, evidence="é" * MAX_COMMAND_BYTES).encode(), ""),
    ("too-large-in-utf8", line(ATTEST, evidence="é" * (MAX_COMMAND_BYTES * 2 // 3)), ""),
    ("array", "[]", ""),
    ("string", '"register_model"', ""),
    ("null", "null", ""),
    ("number", "17", ""),
    ("empty", "", ""),
    ("bom", "\ufeff" + line(WITHDRAW), ""),
    ("trailing-garbage", line(WITHDRAW) + " {}", ""),
    ("type-not-a-string", line(WITHDRAW, type=["withdraw_model"]), "type"),
    ("type-huge", line(WITHDRAW, type="x" * 50_000), "type"),
]


@pytest.mark.parametrize(("text", "field"), [c[1:] for c in JSON_ATTACKS],
                         ids=[c[0] for c in JSON_ATTACKS])
def test_hostile_json_is_refused_naming_the_field(text: str | bytes, field: str) -> None:
    error = refused(text)
    assert error.field == field
    assert len(str(error)) < 400, "a refusal quotes at most a little of the input"


def test_a_refusal_never_carries_control_characters_of_the_input() -> None:
    error = refused(line(WITHDRAW, **{"x\x1b[2J\x00": 1}))
    assert error.field == "'x\\x1b[2J\\x00'"
    assert str(error).isprintable()


def test_text_with_lone_surrogates_is_refused() -> None:
    assert refused('{"type": "withdraw_model", "model": "\\ud800"}').field == "model"
    assert refused('{"type": "withdraw_model", "model": "m", "\\udfff": 1}').field == (
        "'\\udfff'")


# --- timestamps --------------------------------------------------------------------------

OUT_OF_RANGE = ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00",
                "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00",
                "1899-12-31T23:59:59+00:00", "9000-01-01T00:00:00+00:00",
                "8999-12-31T23:30:00-01:00", "1900-01-01T00:30:00+01:00"]
TIME_FIELDS = [(WITHDRAW, "effective_at"), (BASE, "received_at"), (BASE, "effective_at"),
               (BASE, "expires_at"), (ATTEST, "valid_from"), (ATTEST, "valid_until"),
               ({"type": "amend_directive", "directive": "d"}, "expires_at")]


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
@pytest.mark.parametrize(("base", "field"), TIME_FIELDS,
                         ids=[f"{b['type']}.{f}" for b, f in TIME_FIELDS])
def test_out_of_range_timestamps_are_refused_naming_the_field(
    base: dict[str, Any], field: str, moment: str
) -> None:
    error = refused(line(base, **{field: moment}))
    assert (error.field, "out of range" in error.message) == (field, True)


@pytest.mark.parametrize("moment", ["1900-01-01T00:00:00+00:00", "8999-12-31T23:59:59+00:00",
                                    "1900-01-01T00:00:00-05:00"])
def test_timestamps_at_the_ends_of_the_range_are_accepted(moment: str) -> None:
    parse_command_json(line(WITHDRAW, effective_at=moment))


@pytest.mark.parametrize("moment", [*(json.dumps(m) for m in OUT_OF_RANGE),
                                    json.dumps("x" * 10_000), "1e308", "NaN", "true"])
def test_out_of_range_request_times_are_refused_naming_the_field(moment: str) -> None:
    for field in ("at", "known_at"):
        with pytest.raises(CommandError) as caught:
            parse_decision_request_json(f'{{"subject": "u", "model": "m", "{field}": {moment}}}')
        assert caught.value.field == field


# --- strict types ------------------------------------------------------------------------

NOT_BOOLEANS = ["yes", "true", 1, 0, 1.0, "", [], {}]


@pytest.mark.parametrize("value", NOT_BOOLEANS, ids=repr)
@pytest.mark.parametrize("base", [BASE, {"type": "amend_directive", "directive": "d"}],
                         ids=["issue", "amend"])
def test_disclose_takes_only_true_or_false(base: dict[str, Any], value: Any) -> None:
    assert refused(line(base, disclose=value)).field == "disclose"


@pytest.mark.parametrize("value", NOT_BOOLEANS, ids=repr)
def test_predicate_booleans_take_only_true_or_false(value: Any) -> None:
    for key in ("us_person", "everyone"):
        assert refused(line(BASE, subjects={key: value})).field == "subjects"


@pytest.mark.parametrize(("field", "value"), [
    ("model", 5), ("model", True), ("model", ["fable-5"]), ("model", {"id": "m"}),
    ("command_id", 7), ("command_id", False), ("effective_at", True),
])
def test_no_coercion_into_strings_or_times(field: str, value: Any) -> None:
    assert refused(line(WITHDRAW, **{field: value})).field == field


@pytest.mark.parametrize("as_of", ["5", 5.0, True, -1, 2**63, "0x10"], ids=repr)
def test_as_of_takes_only_an_integer_position(as_of: Any) -> None:
    with pytest.raises(CommandError) as caught:
        parse_decision_request_json(json.dumps({"subject": "u", "model": "m", "as_of": as_of}))
    assert caught.value.field == "as_of"
    assert parse_decision_request_json('{"subject": "u", "model": "m", "as_of": 5}').as_of == 5


def test_decision_request_duplicate_keys_and_unknown_fields_are_refused() -> None:
    with pytest.raises(CommandError) as caught:
        parse_decision_request_json('{"subject": "u", "model": "m", "subject": "v"}')
    assert caught.value.field == "subject"
    with pytest.raises(CommandError) as caught:
        parse_decision_request_json('{"subject": "u", "model": "m", "colour": "blue"}')
    assert caught.value.field == "colour"


# --- identifiers and text -----------------------------------------------------------------

BAD_ID_CHARACTERS = {
    "nul": "\x00", "esc": "\x1b", "bell": "\x07", "del": "\x7f", "c1-csi": "\x9b",
    "newline": "\n", "tab": "\t", "space": " ", "nbsp": "\u00a0", "ideographic-space": "\u3000",
    "soft-hyphen": "\u00ad", "lre": "\u202a", "rle": "\u202b", "pdf": "\u202c", "lro": "\u202d",
    "rlo": "\u202e", "lri": "\u2066", "rli": "\u2067", "fsi": "\u2068", "pdi": "\u2069",
    "zwsp": "\u200b", "zwnj": "\u200c", "zwj": "\u200d", "lrm": "\u200e", "rlm": "\u200f",
    "word-joiner": "\u2060", "bom": "\ufeff", "line-separator": "\u2028",
    "paragraph-separator": "\u2029", "private-use": "\ue000", "unassigned": "\U000e0fff",
}
EMPLOYER = {"type": "attest_employer", "subject": "u-1", "org": "acme", "source": "hr-feed"}
ID_FIELDS = [(WITHDRAW, "model"), (ATTEST, "subject"), (BASE, "directive"),
             (WITHDRAW, "command_id"), (EMPLOYER, "org"),
             ({"type": "register_model", "model": "m"}, "family")]


@pytest.mark.parametrize("character", BAD_ID_CHARACTERS.values(), ids=BAD_ID_CHARACTERS.keys())
@pytest.mark.parametrize(("base", "field"), ID_FIELDS,
                         ids=[f"{b['type']}.{f}" for b, f in ID_FIELDS])
def test_ids_refuse_control_format_and_space_characters(
    base: dict[str, Any], field: str, character: str
) -> None:
    error = refused(line(base, **{field: f"u{character}1"}))
    assert error.field == field
    assert str(error).isprintable()


@pytest.mark.parametrize(("where", "document"), [
    ("exempt.subjects.0", {**BASE, "exempt": {"subjects": ["u\u202e1"], "orgs": []}}),
    ("exempt.orgs.0", {**BASE, "exempt": {"subjects": [], "orgs": ["acme\x00"]}}),
    ("models.0", {**BASE, "models": ["fable\u200b-5"]}),
    ("route_to", {**BASE, "effect": "route", "route_to": "fable\x1b-4"}),
    ("grantee.subject", {"type": "grant_entitlement", "entitlement": "e", "models": ["*"],
                         "grantee": {"subject": "u\ufeff"}}),
    ("signature.key_id", {"type": "lift_directive", "directive": "d", "command_id": "c",
                          "signature": {"key_id": "k\u2066", "value": "x"}}),
    ("subjects", {**BASE, "subjects": {"subject": {"any_of": ["u\u202e1"]}}}),
    ("subjects", {**BASE, "subjects": {"employer": {"none_of": ["acme\n"]}}}),
    ("subjects", {**BASE, "subjects": {"purpose": {"any_of": ["bio\x00"]}}}),
])
def test_ids_inside_lists_and_predicates_are_checked_alike(where: str, document: dict) -> None:
    assert refused(json.dumps(document)).field == where


def test_ids_are_nfc_and_bounded() -> None:
    assert refused(line(ATTEST, subject="Zoe\u0301")).field == "subject"
    assert refused(line(ATTEST, subject="u" * (MAX_ID_CHARS + 1))).field == "subject"
    assert parse_command_json(line(ATTEST, subject="u" * MAX_ID_CHARS)).subject


@pytest.mark.parametrize("subject", ["Zoë", "用户-17", "alice@example.com", "urn:corp:u-17",
                                     "[/]", "u_17.a+b", "Ω≈ç"])
def test_printable_ids_are_accepted(subject: str) -> None:
    assert parse_command_json(line(ATTEST, subject=subject)).subject == subject


BAD_TEXT = {"newline": "a\nb", "carriage-return": "a\rb", "nul": "a\x00", "esc": "\x1b[31m",
            "rlo": "abc\u202edcba", "pdi": "\u2069", "line-separator": "a\u2028b",
            "too-long": "x" * (MAX_TEXT_CHARS + 1)}
TEXT_FIELDS = [(BASE, "authority"), (BASE, "reference"), (ATTEST, "source"),
               (ATTEST, "evidence")]


@pytest.mark.parametrize("text", BAD_TEXT.values(), ids=BAD_TEXT.keys())
@pytest.mark.parametrize(("base", "field"), TEXT_FIELDS, ids=[f for _, f in TEXT_FIELDS])
def test_free_text_refuses_control_characters_and_length(
    base: dict[str, Any], field: str, text: str
) -> None:
    assert refused(line(base, **{field: text})).field == field


def test_free_text_keeps_spaces_and_any_script() -> None:
    command = parse_command_json(line(BASE, authority="Bundesamt für Wirtschaft (BAFA) 🇩🇪",
                                      reference="x" * MAX_TEXT_CHARS))
    assert command.authority == "Bundesamt für Wirtschaft (BAFA) 🇩🇪"
    assert refused(line(ATTEST, source="")).field == "source"


# --- lists, predicates, the whole command --------------------------------------------------

TOO_MANY = MAX_LIST_ITEMS + 1


@pytest.mark.parametrize(("document", "field"), [
    ({**BASE, "models": [f"m-{i}" for i in range(TOO_MANY)]}, "models"),
    ({"type": "amend_directive", "directive": "d", "models": ["*"] * TOO_MANY}, "models"),
    ({"type": "grant_entitlement", "entitlement": "e", "grantee": {"org": "o"},
      "models": ["*"] * TOO_MANY}, "models"),
    ({"type": "attest_nationality", "subject": "u", "source": "s",
      "citizenships": ["US"] * TOO_MANY}, "citizenships"),
    ({"type": "attest_nationality", "subject": "u", "source": "s",
      "residencies": ["US"] * TOO_MANY}, "residencies"),
    ({**BASE, "exempt": {"subjects": ["u"] * TOO_MANY, "orgs": []}}, "exempt.subjects"),
    ({**BASE, "exempt": {"subjects": [], "orgs": ["o"] * TOO_MANY}}, "exempt.orgs"),
    ({**BASE, "subjects": {"subject": {"any_of": ["u"] * TOO_MANY}}}, "subjects"),
    ({**BASE, "subjects": {"any": [{"everyone": True}] * TOO_MANY}}, "subjects"),
], ids=["models", "amend-models", "grant-models", "citizenships", "residencies",
        "exempt-subjects", "exempt-orgs", "predicate-values", "predicate-parts"])
def test_lists_are_bounded(document: dict[str, Any], field: str) -> None:
    assert refused(json.dumps(document)).field == field


def test_predicate_depth_and_node_count_are_bounded() -> None:
    deepest = line(BASE, subjects="@").replace('"@"', nested("not", MAX_PREDICATE_DEPTH))
    parse_command_json(deepest)
    error = refused(line(BASE, subjects="@").replace('"@"', nested("not", MAX_PREDICATE_DEPTH + 1)))
    assert (error.field, "deep" in error.message) == ("subjects", True)
    leaves = [{"everyone": True}] * 20
    wide = {"any": [{"all": leaves}] * ((MAX_PREDICATE_NODES // 21) + 1)}
    error = refused(line(BASE, subjects=wide))
    assert (error.field, "nodes" in error.message) == ("subjects", True)


def test_a_document_bigger_than_the_bound_is_refused_on_the_dict_path_too() -> None:
    """HTTP bodies and Kafka's Avro records arrive as documents, not lines: every field within
    its bound can still add up to more than a command may be."""
    many = [f"{i:0{MAX_ID_CHARS}d}" for i in range(MAX_LIST_ITEMS)]
    document = {**BASE, "exempt": {"subjects": many, "orgs": many}}
    with pytest.raises(CommandError) as caught:
        parse_command(document)
    assert caught.value.field == ""
    assert f"the limit is {MAX_COMMAND_BYTES:,}" in caught.value.message


# --- country codes -----------------------------------------------------------------------

@pytest.mark.parametrize("code", ["DEU", "USA", "XX", "XK", "ZZ", "EU", "UK", "France", "",
                                  "D", "1", "\u0131N", "de\x00"])
def test_country_codes_outside_iso_3166_alpha_2_are_refused_everywhere(code: str) -> None:
    assert refused(line(ATTEST, country=code)).field == "country"
    nationality_line = json.dumps({"type": "attest_nationality", "subject": "u", "source": "s",
                                   "citizenships": ["US", code], "residencies": [code]})
    assert refused(nationality_line).field == "citizenships.1"
    for attribute in ("citizenship", "residency", "location"):
        for test in ("any_of", "none_of"):
            error = refused(line(BASE, subjects={attribute: {test: ["FR", code]}}))
            assert error.field == "subjects"
            assert error.message.startswith(f"{attribute}.{test}")
    with pytest.raises(CommandError) as caught:
        parse_decision_request_json(json.dumps({"subject": "u", "model": "m", "location": code}))
    assert caught.value.field == "location"


def test_country_codes_are_upper_cased() -> None:
    assert parse_command_json(line(ATTEST, country="de")).country == "DE"
    command = parse_command_json(line(BASE, subjects={"citizenship": {"none_of": ["us"]}}))
    assert command.subjects.to_data() == {"citizenship": {"none_of": ["US"]}}
    assert DecisionRequest(subject="u", model="m", location="fr").location == "FR"


def test_a_directive_on_deu_no_longer_fails_open(h: Harness) -> None:
    """The issue's case: `any_of ["DEU"]` was accepted and never matched a German citizen."""
    h.apply(register("fable-5", "fable"), nationality("de", ["DE"]), grant("e", subject="de"))
    h.refuse(directive("d", models=["fable-5"], subjects={"citizenship": {"any_of": ["DEU"]}}))
    h.apply(directive("d", models=["fable-5"], subjects={"citizenship": {"any_of": ["de"]}}))
    assert h.effect("de", "fable-5", JUN) == "deny"


# --- command_id means one command --------------------------------------------------------

@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_reused_command_id_with_another_command_is_a_conflict(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), directive("d-1", models=["fable-5"], command_id="c-1"))
    for other in (directive("d-2", models=["fable-5"], command_id="c-1"),
                  directive("d-1", models=["fable-5"], subjects=FOREIGN, command_id="c-1"),
                  register("mythos-5", "mythos", command_id="c-1")):
        error = h.refuse(other)
        assert isinstance(error, CommandConflict)
        assert error.field == "command_id"
        assert "'c-1'" in error.message
    assert "d-2" not in h.engine.index.facts.directives


def test_the_same_command_again_is_a_counted_no_op_however_it_is_written(h: Harness) -> None:
    first = {**WITHDRAW, "effective_at": "2026-11-26T17:21:00-05:00", "command_id": "c-1"}
    h.apply(register("fable-5", "fable"), first)
    position = h.position
    again = h.engine.app.apply(parse_command_json(
        '{"command_id": "c-1", "effective_at": "2026-11-26T22:21:00Z", "model": "fable-5", '
        '"type": "withdraw_model"}'))
    assert (again.applied, again.repeated, again.position, h.position) == (0, 1, position,
                                                                            position)


def test_one_batch_with_one_id_twice_behaves_like_two_batches(h: Harness) -> None:
    h.apply(register("fable-5", "fable"))
    result = h.apply_all([grant("e-1", subject="u-1", command_id="c-1"),
                          grant("e-1", subject="u-1", command_id="c-1")])
    assert (result.applied, result.repeated) == (1, 1)
    position = h.position
    with pytest.raises(CommandConflict) as caught:
        h.apply_all([grant("e-2", subject="u-2", command_id="c-2"),
                     grant("e-3", subject="u-3", command_id="c-2")])
    assert caught.value.field == "command_id"
    assert h.position > position  # e-2 is kept, e-3 is not
    assert h.effect("u-2", "fable-5", JUN) == "allow"
    assert h.effect("u-3", "fable-5", JUN) == "deny"


def _store_receipt_without_digest(h: Harness, command_id: str, command_type: str) -> None:
    """A receipt as stored before receipts kept a digest (class version 1, no `digest`)."""
    receipt = CommandReceipt._create(
        CommandReceipt.Received, id=receipt_key(command_id), timestamp=h.now,
        command_id=command_id, command_type=command_type, digest=None)
    app = h.engine.app
    stored = app.mapper.to_stored_event(receipt.collect_events()[0])
    state = json.loads(stored.state)
    del state["digest"], state["class_version"]
    app.recorder.insert_events([stored.__class__(
        originator_id=stored.originator_id, originator_version=stored.originator_version,
        topic=stored.topic, state=json.dumps(state).encode())])
    assert app.repository.get(receipt_key(command_id)).digest is None


def test_a_receipt_stored_before_digests_tells_the_command_type_only(h: Harness) -> None:
    h.apply(register("fable-5", "fable"))
    _store_receipt_without_digest(h, "c-old", "withdraw_model")
    position = h.position
    repeat = h.engine.app.apply(parse_command({**WITHDRAW, "command_id": "c-old"}))
    assert (repeat.applied, repeat.repeated, h.position) == (0, 1, position)
    error = h.refuse(register("mythos-5", "mythos", command_id="c-old"))
    assert isinstance(error, CommandConflict)


# --- signatures: the id is signed, so a replay is a repeat --------------------------------

OFFICER = Ed25519PrivateKey.generate()


@pytest.fixture
def signed_world() -> Harness:
    """Signatures required (OfficerKeys as the check), a deny directive on fable-5 for every
    non-US citizen, `de` entitled."""
    h = Harness()
    h.engine.close()
    h.engine = open_engine("memory:", clock=h.clock,
                           check_signature=OfficerKeys({"officer-1": OFFICER.public_key()}))
    h.apply(register("fable-5", "fable"), nationality("de", ["DE"]), grant("e-de", subject="de"),
            signed(directive("order", models=["fable-5"], subjects=FOREIGN)))
    return h


def signed(document: dict[str, Any]) -> dict[str, Any]:
    return sign_command(document, OFFICER, "officer-1")


def test_a_signed_command_without_command_id_is_refused_naming_it(signed_world: Harness) -> None:
    document = signed(amend("order", MAR, exempt={"subjects": ["de"], "orgs": []}))
    assert document["command_id"]  # sign_command gave it one
    without = {key: value for key, value in document.items() if key != "command_id"}
    assert signed_world.refuse(without).field == "command_id"


def test_re_posting_amendment_1_after_amendment_2_changes_nothing(signed_world: Harness) -> None:
    """The issue's replay: amendments in force from when they are recorded; amendment 1
    (exempt `de`) posted again after amendment 2 (exempt nobody) would undo amendment 2."""
    exempt_de = signed(amend("order", exempt={"subjects": ["de"], "orgs": []}))
    exempt_none = signed(amend("order", exempt={"subjects": [], "orgs": []}))
    signed_world.apply(exempt_de, recorded_at=MAR)
    signed_world.apply(exempt_none, recorded_at=APR)
    assert signed_world.effect("de", "fable-5", JUN) == "deny"
    position = signed_world.position
    replay = signed_world.apply(exempt_de, recorded_at=MAY)
    assert (replay.applied, replay.repeated, signed_world.position) == (0, 1, position)
    assert signed_world.effect("de", "fable-5", JUN) == "deny"
    # nor can it come back under another id, or none: the signature covers the id
    assert signed_world.refuse({**exempt_de, "command_id": "c-new"}).field == "signature"
    unnamed = {key: value for key, value in exempt_de.items() if key != "command_id"}
    assert signed_world.refuse(unnamed).field == "command_id"


def test_a_signed_command_id_cannot_carry_another_body(signed_world: Harness) -> None:
    exempt_de = signed(amend("order", MAR, exempt={"subjects": ["de"], "orgs": []}))
    signed_world.apply(exempt_de)
    changed = signed({**exempt_de, "effective_at": APR})
    assert changed["command_id"] == exempt_de["command_id"]
    assert isinstance(signed_world.refuse(changed), CommandConflict)


def test_an_amendment_signed_without_expiry_cannot_be_replayed_as_clearing_it() -> None:
    """Omitted and `"expires_at": null` differ for an amendment (keep / clear the expiry), so
    they must differ in what is signed."""
    keys = OfficerKeys({"officer-1": OFFICER.public_key()})
    document = signed(amend("order", MAR, exempt={"subjects": [], "orgs": []}))
    assert keys(parse_command(document)) == "officer-1"
    with pytest.raises(CommandError) as caught:
        keys(parse_command({**document, "expires_at": None}))
    assert caught.value.field == "signature"


def test_a_garbled_signature_is_refused_not_raised(signed_world: Harness) -> None:
    document = signed(amend("order", MAR, on_unknown="ignore"))
    for value in ("", "=" * 88, "\u00e9" * 10, base64.b64encode(b"\x00" * 64).decode(),
                  "A" * (MAX_ID_CHARS + 1)):
        garbled = {**document, "signature": {"key_id": "officer-1", "value": value}}
        assert signed_world.refuse(garbled).field.startswith("signature")


# --- amendments pass the checks an issue passes --------------------------------------------

@pytest.fixture
def directives(h: Harness) -> Harness:
    h.apply(register("fable-5", "fable"), register("fable-4", "fable"),
            directive("deny", models=["fable-5"], effective_at=MAR),
            directive("route", models=["fable-5"], effect="route", route_to="fable-4",
                      effective_at=MAR))
    return h


@pytest.mark.parametrize(("name", "command", "field"), [
    ("deny", amend("deny", APR, expires_at=APR), "expires_at"),
    ("deny", amend("deny", APR, expires_at=MAR), "expires_at"),
    ("deny", amend("deny", None, expires_at=JAN), "expires_at"),
    ("deny", amend("deny", JAN, expires_at=MAR), "expires_at"),
    ("deny", amend("deny", APR, route_to="fable-4"), "route_to"),
    ("deny", amend("deny", APR, effect="route"), "route_to"),
    ("deny", amend("deny", APR, effect="route", route_to=None), "route_to"),
    ("route", amend("route", APR, effect="deny"), "route_to"),
    ("route", amend("route", APR, route_to=None), "route_to"),
    ("route", amend("route", APR, route_to="mythos-5"), "route_to"),
    ("deny", amend("deny", APR, models=["fable-5", "mythos-5"]), "models"),
    ("deny", amend("deny", APR, models=None), "models"),
    ("deny", amend("deny", APR, subjects=None), "subjects"),
    ("deny", amend("deny", APR, effect=None), "effect"),
    ("deny", amend("deny", APR, disclose=None), "disclose"),
    ("deny", amend("deny", APR, exempt=None), "exempt"),
    ("deny", amend("deny", APR, on_unknown=None), "on_unknown"),
], ids=["expiry-at-start", "expiry-before-start", "expiry-before-now",
        "expiry-before-directive-start", "route-to-on-deny", "route-without-target",
        "route-with-null-target", "deny-keeping-target", "route-losing-target",
        "route-to-unregistered", "unregistered-model", "null-models", "null-subjects",
        "null-effect", "null-disclose", "null-exempt", "null-on-unknown"])
def test_an_amendment_that_would_break_the_directive_is_refused(
    directives: Harness, name: str, command: dict[str, Any], field: str
) -> None:
    directives.record_at(MAR)
    assert directives.refuse(command).field == field


def test_a_later_amendment_is_checked_against_the_terms_it_meets(directives: Harness) -> None:
    """Terms are effective-dated: an amendment is checked with every amendment in force at
    and after its start, not only the latest recorded one."""
    directives.apply(amend("deny", MAY, effect="route", route_to="fable-4"))
    # from MAY on the directive routes: a deny from JUN must clear route_to...
    assert directives.refuse(amend("deny", JUN, effect="deny")).field == "route_to"
    directives.apply(amend("deny", JUN, effect="deny", route_to=None))
    # ...and a route_to set from APR on would still meet the deny terms before MAY
    assert directives.refuse(amend("deny", APR, route_to="fable-4")).field == "route_to"


def test_amendments_that_keep_the_directive_whole_are_accepted(directives: Harness) -> None:
    before = directives.position
    directives.apply(amend("deny", APR, expires_at=JUN),
                     amend("deny", APR, effect="route", route_to="fable-4"),
                     amend("route", APR, effect="deny", route_to=None),
                     amend("route", MAY, expires_at=None))
    assert directives.position > before


# --- the property: total on any input ------------------------------------------------------

FIELD_NAMES = [
    "command_id", "directive", "authority", "reference", "received_at", "effective_at",
    "expires_at", "models", "subjects", "effect", "route_to", "disclose", "exempt", "on_unknown",
    "model", "family", "subject", "country", "citizenships", "residencies", "valid_from",
    "valid_until", "source", "evidence", "entitlement", "grantee", "org", "orgs", "kind",
    "signature", "key_id", "value", "all", "any", "not", "everyone", "us_person", "citizenship",
    "residency", "location", "employer", "purpose", "any_of", "none_of", "at", "as_of",
    "known_at",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["US", "DEU", "2026-11-26T17:21:00-05:00",
                                           "9999-12-31T23:59:59-05:00", "*", "family:fable"]),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), children,
                        max_size=6),
    ),
    max_leaves=40,
)
COMMAND_LIKE = st.builds(
    lambda kind, body: {"type": kind, **body} if isinstance(body, dict) else body,
    st.sampled_from([*COMMAND_TYPES, "nope"]), DOCUMENTS)
VALID_LINES = [line(BASE), line(ATTEST), line(WITHDRAW, effective_at=JUN),
               json.dumps(nationality("u", ["US", "DE"])),
               json.dumps(amend("d", MAR, exempt={"subjects": ["u"], "orgs": []})),
               line(BASE, subjects={"all": [FOREIGN, {"not": {"us_person": True}}]})]


def _mutate(text: str, data: st.DataObject) -> bytes:
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip" and at < len(raw):
            raw[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[at:]
        elif action == "insert":
            raw[at:at] = data.draw(st.sampled_from(
                [b"\x00", b"\xff", b"{", b"[", b'"', b",", b'"type":', b"NaN", b"1e999",
                 b"\xe2\x80\xae", b'"x":{"x":{"x":']))
        elif at < len(raw):
            del raw[at]
    return bytes(raw)


def _total(parse: Callable[[Any], BaseModel], text: str | bytes) -> None:
    """`parse` answers a model or raises CommandError; anything else fails the test."""
    try:
        assert isinstance(parse(text), BaseModel)
    except CommandError as error:
        assert str(error).isprintable()


PROPERTY = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_refused(raw: bytes) -> None:
    _total(parse_command_json, raw)
    _total(parse_decision_request_json, raw)


@PROPERTY
@given(COMMAND_LIKE)
def test_any_json_document_parses_or_is_refused(document: Any) -> None:
    text = json.dumps(document, allow_nan=True)
    _total(parse_command_json, text)
    _total(parse_command_json, text.encode())
    _total(parse_decision_request_json, text)


@PROPERTY
@given(st.data())
def test_any_mutation_of_a_valid_line_parses_or_is_refused(data: st.DataObject) -> None:
    mutated = _mutate(data.draw(st.sampled_from(VALID_LINES)), data)
    _total(parse_command_json, mutated)
    _total(parse_command_json, mutated.decode("utf-8", "replace"))
