"""Every command, stored event and enforcement record survives the Avro wire unchanged."""

from __future__ import annotations

from datetime import UTC

import pytest
from eventsourcing.domain import Aggregate

from domain.commands import COMMAND_TYPES, AmendDirective, parse_command
from schemas.codec import MAGIC, decode, default_registry, encode
from schemas.records import (
    DECISION_LOG_RECORDS,
    ENFORCEMENT_RECORDS,
    EVENT_CLASSES,
    EVENT_RECORDS,
    command_to_record,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
    event_to_record,
)
from tests.schemas.avro_examples import COMMANDS, ENFORCEMENT, build_events, decision_log_records

COMMAND_CASES = [
    pytest.param(document, id=f"{kind}-{n}")
    for kind, documents in COMMANDS.items()
    for n, document in enumerate(documents)
]
EVENTS = build_events()


def test_every_record_name_has_a_schema_and_examples() -> None:
    registry = default_registry()
    expected = {*COMMAND_TYPES, *EVENT_RECORDS.values(), *ENFORCEMENT_RECORDS,
                *DECISION_LOG_RECORDS}
    assert set(registry.names) == expected
    assert set(COMMANDS) == set(COMMAND_TYPES)
    assert {type(event).__qualname__ for event in EVENTS} == set(EVENT_RECORDS)
    assert set(ENFORCEMENT) == set(ENFORCEMENT_RECORDS)


@pytest.mark.parametrize("kind", COMMAND_TYPES)
def test_command_schema_mirrors_the_pydantic_model(kind: str) -> None:
    """A field added to a command needs a new schema version; this says so before Kafka does."""
    model = type(parse_command(COMMANDS[kind][0]))
    schema_fields = {field["name"] for field in default_registry().current(kind).schema["fields"]}
    extra = {"carried"} if kind == "amend_directive" else set()
    assert schema_fields == set(model.model_fields) - {"type"} | extra


@pytest.mark.parametrize("document", COMMAND_CASES)
def test_command_round_trip(document: dict) -> None:
    command = parse_command(document)
    data = encode_command(command)
    assert data[:2] == MAGIC
    decoded = decode_command(data)
    assert decoded == command
    assert type(decoded) is type(command)
    # what an officer signed (the command's JSON form) is unchanged, so signatures still verify
    assert decoded.model_dump(mode="json") == command.model_dump(mode="json")
    if isinstance(command, AmendDirective):
        # pydantic equality ignores which fields were given; an amendment's meaning does not
        assert isinstance(decoded, AmendDirective)
        assert decoded.amended_terms() == command.amended_terms()


def test_amendment_keeps_an_explicit_null_apart_from_an_omitted_term() -> None:
    clears = parse_command({"type": "amend_directive", "directive": "d", "expires_at": None})
    keeps = parse_command({"type": "amend_directive", "directive": "d", "disclose": True})
    assert isinstance(clears, AmendDirective) and isinstance(keeps, AmendDirective)
    assert decode_command(encode_command(clears)).amended_terms() == {"expires_at": None}
    assert decode_command(encode_command(keeps)).amended_terms() == {"disclose": True}


def test_predicate_travels_as_canonical_json_text() -> None:
    name, record = command_to_record(parse_command(COMMANDS["issue_directive"][0]))
    assert name == "issue_directive"
    assert record["subjects"] == '{"citizenship":{"none_of":["US"]}}'


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__qualname__)
def test_event_round_trip(event: Aggregate.Event) -> None:
    decoded = decode_event(encode_event(event))
    assert type(decoded) is type(event)
    assert decoded == event
    assert decoded.__dict__ == event.__dict__
    assert decoded.timestamp.tzinfo is UTC


def test_decoded_events_rebuild_the_aggregates() -> None:
    """What a consumer of interlock.events gets is enough to replay the aggregates."""
    originals: dict = {}
    replayed: dict = {}
    for event in EVENTS:
        originals[event.originator_id] = event.mutate(originals.get(event.originator_id))
        wire = decode_event(encode_event(event))
        replayed[wire.originator_id] = wire.mutate(replayed.get(wire.originator_id))
    assert replayed.keys() == originals.keys()
    for key, aggregate in originals.items():
        assert replayed[key].__dict__ == aggregate.__dict__


def test_event_record_carries_no_python_module_path() -> None:
    name, record = event_to_record(EVENTS[0])
    assert name == "model_version_registered"
    assert "originator_topic" not in record
    assert EVENT_CLASSES[name] is type(EVENTS[0])


@pytest.mark.parametrize(
    ("name", "record"),
    [pytest.param(name, record, id=f"{name}-{n}")
     for name, records in ENFORCEMENT.items() for n, record in enumerate(records)],
)
def test_enforcement_round_trip(name: str, record: dict) -> None:
    decoded_name, decoded = decode(encode(name, record))
    assert decoded_name == name
    assert decoded == record
    assert all(decoded[k].tzinfo is UTC for k in ("recorded_at", "emitted_at"))


@pytest.mark.parametrize("record", decision_log_records(), ids=lambda r: r["kind"])
def test_decision_log_entry_round_trip_keeps_its_seal(record: dict) -> None:
    """What the log's Kafka sink writes reads back as the same entry, whose digest and link
    still verify: the wire keeps every byte the chain covers."""
    from consumers.decision_log import entry_from_record
    from projections.decision_log import digest_of

    (name,) = DECISION_LOG_RECORDS
    decoded_name, decoded = decode(encode(name, record))
    assert (decoded_name, decoded) == (name, record)
    entry = entry_from_record(decoded)
    assert digest_of(entry.canonical()) == entry.digest == record["digest"]
