"""Real domain objects for every Avro record: commands, stored events, enforcement records.

Shared by the round-trip tests and by freeze_samples.py (which freezes one message per schema
version as test data), so both exercise the same, domain-valid values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEvent

from domain.aggregates import CommandReceipt, Directive, Entitlement, ModelVersion, Subject
from domain.commands import AmendDirective, IssueDirective, parse_command
from domain.terms import DirectiveTerms

EASTERN = timezone(timedelta(hours=-5))
T0 = datetime(2026, 11, 26, 17, 21, 0, 123456, tzinfo=EASTERN)
"""The order's arrival, given with a non-UTC offset on purpose."""


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


PREDICATE = {"all": [{"citizenship": {"none_of": ["US"]}},
                     {"not": {"employer": {"any_of": ["acme"]}}},
                     {"any": [{"us_person": False}, {"everyone": True}]}]}

SIGNATURE = {"key_id": "officer-1", "value": "c2lnbmF0dXJlIGJ5dGVz"}

COMMANDS: dict[str, list[dict[str, Any]]] = {
    "register_model": [
        {"type": "register_model", "model": "fable-5", "family": "fable"},
        {"type": "register_model", "model": "mythos-5", "family": "mythos", "command_id": "c-1"},
    ],
    "withdraw_model": [
        {"type": "withdraw_model", "model": "fable-5"},
        {"type": "withdraw_model", "model": "fable-5", "effective_at": "2026-11-26T17:21:00-05:00",
         "command_id": "c-2"},
    ],
    "reinstate_model": [
        {"type": "reinstate_model", "model": "fable-5"},
        {"type": "reinstate_model", "model": "fable-5", "effective_at": "2026-11-27T09:00:00Z"},
    ],
    "grant_entitlement": [
        {"type": "grant_entitlement", "entitlement": "e-1", "grantee": {"org": "acme"},
         "models": ["family:fable"]},
        {"type": "grant_entitlement", "entitlement": "e-2", "grantee": {"subject": "u-1"},
         "models": ["fable-5", "*"], "valid_from": "2026-01-01T00:00:00+01:00",
         "valid_until": "2027-01-01T00:00:00.000001Z", "command_id": "c-3"},
    ],
    "revoke_entitlement": [
        {"type": "revoke_entitlement", "entitlement": "e-1"},
        {"type": "revoke_entitlement", "entitlement": "e-1", "effective_at": "2026-11-26T22:21Z"},
    ],
    "attest_nationality": [
        {"type": "attest_nationality", "subject": "u-1", "source": "passport-kyc"},
        {"type": "attest_nationality", "subject": "u-1", "citizenships": ["US", "DE"],
         "residencies": ["FR"], "valid_from": "1990-05-01T00:00:00Z",
         "valid_until": "2030-05-01T00:00:00Z", "source": "passport-kyc", "evidence": "doc-9"},
    ],
    "attest_location": [
        {"type": "attest_location", "subject": "u-1", "country": "FR", "source": "ip-geo"},
        {"type": "attest_location", "subject": "u-1", "country": "fr",
         "valid_from": "2026-11-26T10:00:00+01:00", "valid_until": "2026-11-26T11:00:00+01:00",
         "source": "ip-geo", "evidence": "ip 192.0.2.1"},
    ],
    "attest_employer": [
        {"type": "attest_employer", "subject": "u-1", "org": "acme", "source": "hr-feed"},
        {"type": "attest_employer", "subject": "u-1", "org": "acme",
         "valid_from": "2020-01-01T00:00:00Z", "valid_until": None, "source": "hr-feed",
         "evidence": "contract 7"},
    ],
    "revoke_attestation": [
        {"type": "revoke_attestation", "subject": "u-1", "kind": "nationality"},
        {"type": "revoke_attestation", "subject": "u-1", "kind": "employer",
         "effective_at": "2026-11-26T17:21:00-05:00"},
    ],
    "issue_directive": [
        {"type": "issue_directive", "directive": "bis-2026-0417", "models": ["fable-5"],
         "subjects": {"citizenship": {"none_of": ["US"]}}},
        {"type": "issue_directive", "directive": "bis-2026-0417",
         "authority": "US Dept. of Commerce (BIS)", "reference": "letter of 2026-11-26",
         "received_at": "2026-11-26T17:21:00-05:00", "effective_at": "2026-11-26T17:30:00-05:00",
         "expires_at": "2027-11-26T00:00:00Z", "models": ["fable-5", "mythos-5", "family:x"],
         "subjects": PREDICATE, "effect": "route", "route_to": "fable-4", "disclose": True,
         "exempt": {"subjects": ["u-3"], "orgs": ["acme"]}, "on_unknown": "ignore",
         "command_id": "c-4", "signature": SIGNATURE},
    ],
    "amend_directive": [
        {"type": "amend_directive", "directive": "bis-2026-0417",
         "exempt": {"subjects": ["u-3"], "orgs": []}},
        {"type": "amend_directive", "directive": "bis-2026-0417", "expires_at": None,
         "route_to": None, "effect": "deny", "effective_at": "2026-11-27T00:00:00Z"},
        {"type": "amend_directive", "directive": "bis-2026-0417", "models": ["*"],
         "subjects": PREDICATE, "disclose": False, "on_unknown": "skip",
         "expires_at": "2027-01-01T00:00:00Z", "command_id": "c-5", "signature": SIGNATURE},
    ],
    "lift_directive": [
        {"type": "lift_directive", "directive": "bis-2026-0417"},
        {"type": "lift_directive", "directive": "bis-2026-0417",
         "effective_at": "2026-12-01T00:00:00Z", "signature": SIGNATURE},
    ],
}


def directive_terms(command: dict[str, Any]) -> DirectiveTerms:
    """The terms of an issue command, as domain.application issues them."""
    issued = parse_command(command)
    assert isinstance(issued, IssueDirective)
    return issued.terms()


def build_events() -> list[DomainEvent]:
    """At least one event of every stored event class, made by the aggregates themselves."""
    model = ModelVersion.register("fable-5", "fable", recorded_at=at(0))
    model.withdraw(at(1), recorded_at=at(2))
    model.reinstate(at(3), recorded_at=at(4))

    for_org = Entitlement.grant("e-1", "org", "acme", ["family:fable"], at(-60), None, at(-60))
    for_org.revoke(at(5), recorded_at=at(5))
    for_subject = Entitlement.grant("e-2", "subject", "u-1", ["fable-5", "*"], at(-60), at(600),
                                    at(-59))

    subject = Subject.register("u-1", recorded_at=at(-30))
    subject.attest(Subject.NationalityAttested, at(-30), citizenships=["DE", "US"],
                   residencies=["FR"], valid_from=datetime(1990, 5, 1, tzinfo=UTC),
                   valid_until=None, source="passport-kyc", evidence="doc-9")
    subject.attest(Subject.LocationAttested, at(-29), country="FR", valid_from=at(-29),
                   valid_until=at(31), source="ip-geo", evidence=None)
    subject.attest(Subject.EmployerAttested, at(-28), org="acme", valid_from=at(-1000),
                   valid_until=None, source="hr-feed", evidence="contract 7")
    subject.revoke_attestation("location", at(6), recorded_at=at(7))

    issue = COMMANDS["issue_directive"][1]
    directive = Directive.issue("bis-2026-0417", issue["authority"], issue["reference"], at(0),
                                at(9), directive_terms(issue), "officer-1", recorded_at=at(0))
    amend = parse_command(COMMANDS["amend_directive"][1])
    assert isinstance(amend, AmendDirective)
    directive.amend(at(10), amend.change(), None, recorded_at=at(10))
    directive.lift(at(11), "officer-1", recorded_at=at(11))

    receipt = CommandReceipt.receive("c-4", "issue_directive", "ab" * 32, recorded_at=at(0))

    events: list[DomainEvent] = []
    for aggregate in (model, for_org, for_subject, subject, directive, receipt):
        events.extend(aggregate.collect_events())
    return events


ENFORCEMENT: dict[str, list[dict[str, Any]]] = {
    "access_revoked": [
        {"subject": "u-17", "subjects": ["u-17", "u-23", "u-99"], "ats": [], "model": "fable-5",
         "effect": "deny", "route_to": None, "disclosed": False,
         "reasons": [{"code": "directive", "ref": "bis-2026-0417"},
                     {"code": "unknown_attribute", "ref": "citizenship"}],
         "at": at(0) + timedelta(seconds=1), "position": 1834, "received_at": at(0),
         "recorded_at": at(0) + timedelta(seconds=1),
         "emitted_at": at(0) + timedelta(seconds=1, microseconds=250_000)},
        {"subject": "u-18", "subjects": ["u-18"], "ats": [], "model": "mythos-5",
         "effect": "route",
         "route_to": "mythos-4",
         "disclosed": True, "reasons": [{"code": "route", "ref": "internal-7"}],
         "at": at(1), "position": 1835, "received_at": None, "recorded_at": at(1),
         "emitted_at": at(2)},
    ],
    "access_restored": [
        {"subject": "u-17", "subjects": ["u-17"], "ats": [], "cites": [], "model": "fable-5",
         "effect": "allow",
         "route_to": None, "disclosed": False, "reasons": [{"code": "entitled", "ref": "e-1"}],
         "at": at(51), "position": 1900, "received_at": at(50), "recorded_at": at(51),
         "emitted_at": at(52), "first": False},
        {"subject": "u-19", "subjects": ["u-19", "u-20"], "ats": [at(40), at(41)],
         "cites": ["plan-u-19", "plan-u-20"],
         "model": "fable-5", "effect": "allow", "route_to": None, "disclosed": False,
         "reasons": [{"code": "entitled", "ref": "plan-u-19"}],
         "at": at(40), "position": 1901, "received_at": None, "recorded_at": at(53),
         "emitted_at": at(54), "first": True},
    ],
    "enforcement_completed": [
        {"position": 1834, "moment": None, "partition": 2, "records": 1, "changes": 3,
         "shard": 0, "shards": 2, "recorded_at": at(0) + timedelta(seconds=1),
         "emitted_at": at(0) + timedelta(seconds=1, microseconds=260_000)},
        {"position": 1901, "moment": at(60), "partition": 1, "records": 0, "changes": 0,
         "shard": 1, "shards": 2, "recorded_at": at(53), "emitted_at": at(60)},
    ],
}


def decision_log_records() -> list[dict[str, Any]]:
    """`interlock.decisions` records made by the decision log's own code: a plain decision, one
    with every optional field (routed, known_at, context), and a prune record."""
    from consumers.decision_log import entry_to_record
    from domain.decision import Decision, Reason
    from projections.decision_log import Chain, Genesis, Pruned, micros, prune_record

    chain = Chain("gw-1:7", name="gw-1:7/00c0ffee")
    denied = Decision("u-17", "fable-5", "deny", None, False,
                      (Reason("directive", "bis-2026-0417"),
                       Reason("unknown_attribute", "citizenship")), at(4), 1834)
    routed = Decision("u-18", "mythos-5", "route", "mythos-4", True,
                      (Reason("route", "internal-7"),), at(5), 1835)
    entries = chain.seal([
        ("9e22fa7e-f58c-8059-a6cf-000000000001", micros(at(4)), denied, None, None, None),
        ("9e22fa7e-f58c-8059-a6cf-000000000002", micros(at(5)), routed, at(1), "FR",
         "research"),
    ], {"fable-5": "fable", "mythos-5": "mythos"}.get)
    pruned = prune_record("ops:1", micros(at(60)), Pruned(
        at(30), 2, (Genesis(chain.name, 2, entries[-1].link),)))
    return [entry_to_record(entry) for entry in (*entries, pruned)]


SAMPLE_TIME = datetime(2026, 11, 26, 22, 21, 0, 123456, tzinfo=UTC)
SAMPLE_UUID = UUID("9e22fa7e-f58c-5059-a6cf-e3e103c41e7d")
_PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None, "boolean": True, "int": 1, "long": 1, "float": 1.0, "double": 1.0,
    "bytes": b"x", "string": "x",
}


def sample_datum(schema: Any, named: dict[str, Any]) -> Any:
    """A value for any (parsed) schema, every optional branch taken: for schemas that have no
    domain object (yet), e.g. an old version whose sample was never frozen."""
    if isinstance(schema, list):
        return sample_datum(next((b for b in schema if b != "null"), "null"), named)
    if isinstance(schema, str):
        return _PRIMITIVE_SAMPLES[schema] if schema in _PRIMITIVE_SAMPLES else sample_datum(
            named[schema], named)
    logical = schema.get("logicalType")
    if logical in ("timestamp-micros", "timestamp-millis"):
        return SAMPLE_TIME
    if logical == "uuid":
        return SAMPLE_UUID
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: sample_datum(f["type"], named) for f in schema["fields"]}
    if kind == "array":
        return [sample_datum(schema["items"], named)]
    if kind == "map":
        return {"k": sample_datum(schema["values"], named)}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "fixed":
        return bytes(schema["size"])
    return _PRIMITIVE_SAMPLES[kind]
