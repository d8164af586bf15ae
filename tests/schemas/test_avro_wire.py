"""The wire format: single-object framing, a golden vector, and clear errors on bad input."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastavro import parse_schema
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas.checks import Invalid, compile_check
from schemas.codec import MAGIC, CodecError, decode, default_registry, encode, fingerprint
from tests.schemas.avro_examples import sample_datum

EMPTY_64 = 0xC15D213AA4D7A795


def rabin_64(data: bytes) -> int:
    """CRC-64-AVRO transcribed from the Avro specification ("Schema Fingerprints"), so the
    fingerprint is checked against the spec itself and not only against fastavro."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY_64 & -(fp & 1))
        table.append(fp)
    fp = EMPTY_64
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_matches_the_apache_avro_reference_vector() -> None:
    # Apache Avro's own tests (lang/ruby/test/test_fingerprints.rb): "int" has CRC-64-AVRO
    # 0x7275d51a3f395c8f and single-object header c3 01 8f 5c 39 3f 1a d5 75 72.
    assert rabin_64(b'"int"') == 0x7275D51A3F395C8F
    assert MAGIC + fingerprint("int") == bytes.fromhex("c3018f5c393f1ad57572")


@pytest.mark.parametrize("name", default_registry().names)
def test_header_is_magic_then_little_endian_fingerprint_of_the_writer(name: str) -> None:
    registry = default_registry()
    schema = registry.current(name).schema
    canonical = to_parsing_canonical_form(schema)
    expected = struct.pack("<Q", rabin_64(canonical.encode()))
    assert registry.current(name).fingerprint == expected
    assert bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO")) == expected
    data = registry.encode(name, sample_datum(schema, registry.current(name).named))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == expected


# withdraw_model v1, {"command_id": "c-1", "model": "fable-5",
#                     "effective_at": 1970-01-01T00:00:01Z}, derived by hand from the spec:
#   c3 01                     magic
#   66 41 14 16 a2 c1 67 d9   CRC-64-AVRO of WITHDRAW_MODEL_CANONICAL, little-endian
#   02                        command_id: union branch 1 (string); zigzag(1) = 2
#   06 63 2d 31               length 3 (zigzag 6), "c-1"
#   0e 66 61 62 6c 65 2d 35   model: length 7 (zigzag 14), "fable-5"
#   02                        effective_at: union branch 1 (timestamp-micros)
#   80 89 7a                  1_000_000 us, zigzag 2_000_000 = 0x1e8480, varint 80 89 7a
GOLDEN = "c301 664114 16a2c167d9 02 06632d31 0e6661626c652d35 02 80897a"
WITHDRAW_MODEL_CANONICAL = (
    '{"name":"interlock.v1.withdraw_model","type":"record","fields":['
    '{"name":"command_id","type":["null","string"]},{"name":"model","type":"string"},'
    '{"name":"effective_at","type":["null","long"]}]}'
)
GOLDEN_RECORD = {"command_id": "c-1", "model": "fable-5",
                 "effective_at": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)}


def test_golden_vector_pins_the_wire_format() -> None:
    golden = bytes.fromhex(GOLDEN.replace(" ", ""))
    writer = default_registry().version("withdraw_model", 1)
    assert to_parsing_canonical_form(writer.schema) == WITHDRAW_MODEL_CANONICAL
    assert golden[2:10] == struct.pack("<Q", rabin_64(WITHDRAW_MODEL_CANONICAL.encode()))
    assert default_registry().encode("withdraw_model", GOLDEN_RECORD, version=1) == golden
    assert decode(golden) == ("withdraw_model", GOLDEN_RECORD)


def test_timestamps_decode_as_utc_aware_whatever_offset_they_were_given() -> None:
    tokyo = datetime(2026, 11, 27, 7, 21, 0, 5, tzinfo=timezone(timedelta(hours=9)))
    _, record = decode(encode("withdraw_model", {"model": "fable-5", "effective_at": tokyo}))
    assert record["effective_at"] == tokyo
    assert record["effective_at"].tzinfo is UTC
    assert record["effective_at"] == datetime(2026, 11, 26, 22, 21, 0, 5, tzinfo=UTC)


def test_naive_datetime_is_rejected_on_encode() -> None:
    # fastavro would take it as local time; that is a silent shift, not a timestamp
    with pytest.raises(CodecError, match=r"effective_at: naive datetime"):
        encode("withdraw_model", {"model": "fable-5", "effective_at": datetime(2026, 11, 26)})
    with pytest.raises(CodecError, match=r"access_revoked.recorded_at: naive datetime"):
        encode("access_revoked", {
            "subject": "u", "model": "m", "effect": "deny", "reasons": [], "position": 1,
            "at": datetime.now(UTC), "recorded_at": datetime(2026, 11, 26),
            "emitted_at": datetime.now(UTC)})


def test_unknown_fields_and_wrong_types_are_rejected_on_encode() -> None:
    with pytest.raises(CodecError, match=r"fields not in schema .*\['modle'\]"):
        encode("register_model", {"model": "fable-5", "family": "fable", "modle": "x"})
    with pytest.raises(CodecError, match=r"register_model.model: 5 is not an Avro string"):
        encode("register_model", {"model": 5, "family": "fable"})
    with pytest.raises(CodecError, match=r"register_model.family: missing"):
        encode("register_model", {"model": "fable-5"})
    with pytest.raises(CodecError, match=r"unknown record name 'nope'"):
        encode("nope", {})


ENFORCED = {"subject": "u", "model": "m", "effect": "deny", "route_to": None,
            "reasons": [{"code": "directive", "ref": "d"}], "at": datetime.now(UTC),
            "position": 7, "recorded_at": datetime.now(UTC), "emitted_at": datetime.now(UTC)}


@pytest.mark.parametrize(("change", "message"), [
    ({"position": 1.5}, r"access_revoked.position: 1.5 is not an Avro long"),
    ({"position": True}, r"access_revoked.position: True is not an Avro long"),
    ({"position": 2**63}, r"is not an Avro long"),
    ({"disclosed": "x"}, r"access_revoked.disclosed: 'x' is not an Avro boolean"),
    ({"reasons": "directive"}, r"access_revoked.reasons: 'directive' is not an array"),
    ({"reasons": [{"code": "x", "ref": 3}]}, r"access_revoked.reasons\[0\].ref: 3 is not"),
    ({"reasons": [{"code": "x", "why": "?"}]}, r"reasons\[0\]: fields not in schema"),
    ({"route_to": b"m"}, r"access_revoked.route_to: b'm' is not an Avro string"),
    ({"emitted_at": "2026-11-26T22:21:00Z"}, r"emitted_at: '2026-11-26T22:21:00Z' is not a time"),
])
def test_what_fastavro_would_coerce_is_refused(change: dict, message: str) -> None:
    """fastavro's writer takes all of these without a word (1.5 becomes 1, "x" becomes true,
    a string becomes an array of characters); the codec refuses them."""
    encode("access_revoked", ENFORCED)
    with pytest.raises(CodecError, match=message):
        encode("access_revoked", {**ENFORCED, **change})


def test_bad_magic() -> None:
    data = bytearray(encode("register_model", {"model": "fable-5", "family": "fable"}))
    data[0] = 0xC4
    with pytest.raises(CodecError, match="bad magic"):
        decode(bytes(data))
    with pytest.raises(CodecError, match="bad magic"):
        decode(b'{"type": "register_model"}')


def test_unknown_fingerprint() -> None:
    data = MAGIC + bytes(8) + b"\x00"
    with pytest.raises(CodecError, match="unknown writer schema fingerprint 0000000000000000"):
        decode(data)


@pytest.mark.parametrize("cut", [0, 1, 2, 5, 9])
def test_truncated_header(cut: int) -> None:
    data = encode("register_model", {"model": "fable-5", "family": "fable"})
    with pytest.raises(CodecError, match="truncated header"):
        decode(data[:cut])


def test_every_truncation_of_the_body_is_an_error() -> None:
    data = encode("issue_directive", {
        "directive": "d", "models": ["fable-5"], "subjects": '{"everyone":true}',
        "received_at": datetime.now(UTC), "exempt": {"subjects": ["u-1"], "orgs": []},
        "signature": {"key_id": "k", "value": "v"}})
    for cut in range(10, len(data)):
        with pytest.raises(CodecError, match="truncated body"):
            decode(data[:cut])


def test_trailing_bytes_are_an_error() -> None:
    data = encode("register_model", {"model": "fable-5", "family": "fable"})
    with pytest.raises(CodecError, match="1 trailing bytes"):
        decode(data + b"\x00")


def test_corrupt_body_is_an_error() -> None:
    data = bytearray(encode("register_model", {"model": "fable-5", "family": "fable"}))
    data[10] = 0x04  # union branch 2 of ["null", "string"] does not exist
    with pytest.raises(CodecError, match="register_model: corrupt body"):
        decode(bytes(data))


def test_checks_cover_every_avro_type_and_recursion() -> None:
    schema = {"type": "record", "name": "node", "namespace": "interlock.v1", "fields": [
        {"name": "kind", "type": {"type": "enum", "name": "kind", "symbols": ["leaf", "all"]}},
        {"name": "parts", "type": {"type": "array", "items": "node"}, "default": []},
        {"name": "tags", "type": {"type": "map", "values": "int"}, "default": {}},
        {"name": "hash", "type": ["null", {"type": "fixed", "name": "h", "size": 2}],
         "default": None},
        {"name": "either", "type": ["null", "long", "string"], "default": None},
        {"name": "weight", "type": "double", "default": 0.0},
    ]}
    named: dict = {}
    check = compile_check(parse_schema(schema, named), named)
    check({"kind": "all", "parts": [{"kind": "leaf", "tags": {"a": 1}, "hash": b"\x00\x01",
                                     "either": "x", "weight": 1}]})
    for bad, message in [
        ({"kind": "some"}, "kind: 'some' is not a symbol"),
        ({"kind": "all", "parts": [{"kind": "nope"}]}, r"parts\[0\].kind: 'nope'"),
        ({"kind": "leaf", "tags": {"a": 2**40}}, r"tags\['a'\]: 1099511627776 is not an Avro int"),
        ({"kind": "leaf", "hash": b"\x00"}, r"hash: b'\\x00' is not 2 bytes"),
        ({"kind": "leaf", "either": 1.5}, "either: 1.5 fits no branch of the union"),
        ({"kind": "leaf", "weight": "1"}, "weight: '1' is not an Avro double"),
    ]:
        with pytest.raises(Invalid, match=message):
            check(bad)
