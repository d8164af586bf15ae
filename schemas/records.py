"""Domain objects to Avro records and back: commands (pydantic) and stored events.

Commands come back through `parse_command`, so wire data is validated exactly like JSON input.
Events come back as the same eventsourcing event classes with the same fields, so a consumer
of `interlock.events` can feed them to projections as if it had read the event store.
"""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.domain import CanInitAggregate, DomainEvent
from eventsourcing.utils import get_topic

from domain.aggregates import CommandReceipt, Directive, Entitlement, ModelVersion, Subject
from domain.commands import (
    COMMAND_TYPES,
    AmendDirective,
    Command,
    CommandError,
    load_json,
    parse_command,
)
from domain.limits import MAX_EVENT_BYTES
from schemas.codec import CodecError, SchemaRegistry, default_registry

_EVENTS: dict[type[DomainEvent], str] = {
    ModelVersion.Registered: "model_version_registered",
    ModelVersion.Withdrawn: "model_version_withdrawn",
    ModelVersion.Reinstated: "model_version_reinstated",
    Entitlement.Granted: "entitlement_granted",
    Entitlement.Revoked: "entitlement_revoked",
    Subject.Registered: "subject_registered",
    Subject.NationalityAttested: "subject_nationality_attested",
    Subject.LocationAttested: "subject_location_attested",
    Subject.EmployerAttested: "subject_employer_attested",
    Subject.AttestationRevoked: "subject_attestation_revoked",
    Directive.Issued: "directive_issued",
    Directive.Amended: "directive_amended",
    Directive.Lifted: "directive_lifted",
    CommandReceipt.Received: "command_receipt_received",
}
"""Stored event class → Avro record name. Explicit, because the record name is wire format and
must not change when a Python class is renamed or moved."""

EVENT_RECORDS: dict[str, str] = {cls.__qualname__: name for cls, name in _EVENTS.items()}
"""Event class `__qualname__` (e.g. `ModelVersion.Registered`) → Avro record name."""
EVENT_CLASSES: dict[str, type[DomainEvent]] = {name: cls for cls, name in _EVENTS.items()}
ENFORCEMENT_RECORDS: tuple[str, ...] = (
    "access_revoked", "access_restored", "enforcement_completed"
)
"""`interlock.enforcement`: packed access changes and completions (consumers.packing)."""
DECISION_LOG_RECORDS: tuple[str, ...] = ("decision_log_entry",)
"""`interlock.decisions`: served decisions and prune records (consumers.decision_log)."""

_JSON_FIELDS = {"issue_directive": ("subjects",), "amend_directive": ("subjects",),
                "directive_issued": ("terms",), "directive_amended": ("terms",)}
"""Fields carrying a recursive JSON document (predicate, terms) as a string; see README."""

_NOT_SENT = ("originator_topic",)
"""Event attributes that are a Python module path, not a fact: rebuilt on decode, never sent."""


def to_json(document: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces), so equal documents are equal strings."""
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise CodecError(f"not a JSON document: {error}") from None


def _from_json(name: str, field: str, text: str) -> Any:
    """Read by the commands' strict reader: bounded, no duplicate keys, no NaN, never a
    RecursionError for a deeply nested document."""
    try:
        return load_json(text, MAX_EVENT_BYTES)
    except CommandError as error:
        raise CodecError(f"{name}.{field}: not a JSON document: {error.message}") from None


def command_to_record(command: Command) -> tuple[str, dict[str, Any]]:
    """The record name (the command's `type`) and its Avro record."""
    record = command.model_dump(mode="python")
    name = record.pop("type")
    for field in _JSON_FIELDS.get(name, ()):
        if record[field] is not None:
            record[field] = to_json(record[field])
    if isinstance(command, AmendDirective):
        record["carried"] = sorted(command.carried_terms())
    return name, record


def command_from_record(name: str, record: dict[str, Any]) -> Command:
    """Rebuilds a command; raises domain.commands.CommandError if the record breaks a rule."""
    if name not in COMMAND_TYPES:
        raise CodecError(f"{name!r} is not a command record")
    data = dict(record)
    if name == "amend_directive":
        # A term not carried comes back as null: drop it so it stays omitted. Null non-terms
        # (command_id, effective_at, signature) mean the same given or omitted.
        carried = set(data.pop("carried"))
        data = {key: value for key, value in data.items()
                if key in carried or value is not None}
    for field in _JSON_FIELDS.get(name, ()):
        if data.get(field) is not None:
            data[field] = _from_json(name, field, data[field])
    return parse_command({"type": name, **data})


def event_to_record(event: DomainEvent) -> tuple[str, dict[str, Any]]:
    """The record name of a stored event and its Avro record (every attribute but the topic)."""
    try:
        name = EVENT_RECORDS[type(event).__qualname__]
    except KeyError:
        raise CodecError(f"no Avro record for event {type(event).__qualname__}") from None
    record = {k: v for k, v in event.__dict__.items() if k not in _NOT_SENT}
    for field in _JSON_FIELDS.get(name, ()):
        record[field] = to_json(record[field])
    return name, record


def event_from_record(name: str, record: dict[str, Any]) -> DomainEvent:
    """Rebuilds the stored event; a creation event gets its aggregate's topic back."""
    try:
        cls = EVENT_CLASSES[name]
    except KeyError:
        raise CodecError(f"{name!r} is not an event record") from None
    data = dict(record)
    for field in _JSON_FIELDS.get(name, ()):
        data[field] = _from_json(name, field, data[field])
    if issubclass(cls, CanInitAggregate):
        aggregate = _AGGREGATES[cls.__qualname__.split(".")[0]]
        data["originator_topic"] = get_topic(aggregate)
    try:
        return cls(**data)
    except TypeError as error:
        raise CodecError(f"{name}: not the fields of {cls.__qualname__}: {error}") from None


_AGGREGATES = {cls.__name__: cls for cls in (ModelVersion, Entitlement, Subject, Directive,
                                             CommandReceipt)}


def encode_command(command: Command, registry: SchemaRegistry | None = None) -> bytes:
    """A command as a single-object message for `interlock.commands`."""
    return (registry or default_registry()).encode(*command_to_record(command))


def decode_command(data: bytes, registry: SchemaRegistry | None = None) -> Command:
    """A command from `interlock.commands`, validated like JSON input."""
    return command_from_record(*(registry or default_registry()).decode(data))


def encode_event(event: DomainEvent, registry: SchemaRegistry | None = None) -> bytes:
    """A stored event as a single-object message for `interlock.events`."""
    return (registry or default_registry()).encode(*event_to_record(event))


def decode_event(data: bytes, registry: SchemaRegistry | None = None) -> DomainEvent:
    """A stored event from `interlock.events`, as its eventsourcing class."""
    return event_from_record(*(registry or default_registry()).decode(data))
