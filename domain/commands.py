"""Commands: the only input the domain accepts, validated at the boundary.

Every command is one JSON object whose `type` picks its model. Unknown fields, unknown types,
timestamps without a UTC offset or outside [EARLIEST_TIME, LATEST_TIME), values of the wrong
JSON type (no string is read as a boolean or number) and anything beyond the bounds of
`domain.limits` are errors, each naming the field it is about. Strings are checked by
`domain.values` (ids, free text, country codes). `parse_command_json` is total: any input is a
command or a CommandError.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from domain.command_fields import (
    CountryCode,
    Identifier,
    Items,
    ModelId,
    NonEmptyText,
    PredicateField,
    Selector,
    Text,
    Timestamp,
    check_interval,
    check_route,
)
from domain.errors import CommandConflict, CommandError, FieldProblem
from domain.limits import MAX_COMMAND_BYTES, MAX_ID_CHARS
from domain.strict_json import OutOfRange, load_json
from domain.terms import (
    DIRECTIVE_TERMS,
    TERM_DEFAULTS,
    DirectiveTerms,
    Effect,
    OnUnknown,
    TermsChange,
)
from domain.values import field_name, shown

__all__ = [
    "COMMAND_TYPES", "DIRECTIVE_TERMS", "TERM_DEFAULTS", "AmendDirective", "AttestEmployer",
    "AttestLocation", "AttestNationality", "AttestationKind", "Command", "CommandConflict",
    "CommandError", "CountryCode", "Exemptions", "FieldProblem", "GrantEntitlement", "Grantee",
    "Identifier", "IssueDirective", "Items", "LiftDirective", "ModelId", "NonEmptyText",
    "OnUnknown", "OutOfRange", "PredicateField", "RegisterModel", "ReinstateModel",
    "RevokeAttestation", "RevokeEntitlement", "Selector", "Signature", "Text", "Timestamp",
    "WithdrawModel", "canonical_json", "check_route", "command_digest", "command_error_from",
    "load_json", "parse_command", "parse_command_json",
]
"""The commands and, re-exported from where they live now, their field types
(`domain.command_fields`), errors (`domain.errors`) and strict reader (`domain.strict_json`)."""


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: Identifier | None = None

    @model_validator(mode="after")
    def _bounded(self) -> _Command:
        size = len(self.model_dump_json())
        if size > MAX_COMMAND_BYTES:
            raise FieldProblem(
                "", f"the command is {size:,} bytes as JSON; the limit is {MAX_COMMAND_BYTES:,}"
            )
        return self


class RegisterModel(_Command):
    type: Literal["register_model"]
    model: ModelId
    family: ModelId


class WithdrawModel(_Command):
    type: Literal["withdraw_model"]
    model: Identifier
    effective_at: Timestamp | None = None


class ReinstateModel(_Command):
    type: Literal["reinstate_model"]
    model: Identifier
    effective_at: Timestamp | None = None


class Grantee(BaseModel):
    """Exactly one of a subject or an organisation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Identifier | None = None
    org: Identifier | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Grantee:
        if (self.subject is None) == (self.org is None):
            raise ValueError('give exactly one of "subject" or "org"')
        return self


class GrantEntitlement(_Command):
    type: Literal["grant_entitlement"]
    entitlement: Identifier
    grantee: Grantee
    models: Items[Selector] = Field(min_length=1)
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None

    @model_validator(mode="after")
    def _ordered(self) -> GrantEntitlement:
        check_interval(self.valid_from, self.valid_until)
        return self


class RevokeEntitlement(_Command):
    type: Literal["revoke_entitlement"]
    entitlement: Identifier
    effective_at: Timestamp | None = None


class AttestNationality(_Command):
    type: Literal["attest_nationality"]
    subject: Identifier
    citizenships: Items[CountryCode] = Field(default_factory=list)
    residencies: Items[CountryCode] = Field(default_factory=list)
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    source: NonEmptyText
    evidence: Text | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AttestNationality:
        check_interval(self.valid_from, self.valid_until)
        return self


class AttestLocation(_Command):
    type: Literal["attest_location"]
    subject: Identifier
    country: CountryCode
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    source: NonEmptyText
    evidence: Text | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AttestLocation:
        check_interval(self.valid_from, self.valid_until)
        return self


class AttestEmployer(_Command):
    type: Literal["attest_employer"]
    subject: Identifier
    org: Identifier
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    source: NonEmptyText
    evidence: Text | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AttestEmployer:
        check_interval(self.valid_from, self.valid_until)
        return self


AttestationKind = Literal["nationality", "location", "employer"]


class RevokeAttestation(_Command):
    type: Literal["revoke_attestation"]
    subject: Identifier
    kind: AttestationKind
    effective_at: Timestamp | None = None


class Exemptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subjects: Items[Identifier] = Field(default_factory=list)
    orgs: Items[Identifier] = Field(default_factory=list)


class Signature(BaseModel):
    """An officer's Ed25519 signature over the command's canonical JSON (see `canonical_json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: Identifier
    value: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
    """Base64 of the 64-byte signature."""


class IssueDirective(_Command):
    type: Literal["issue_directive"]
    directive: Identifier
    authority: Text = ""
    reference: Text = ""
    received_at: Timestamp | None = None
    effective_at: Timestamp | None = None
    expires_at: Timestamp | None = TERM_DEFAULTS["expires_at"]
    models: Items[Selector] = Field(min_length=1)
    subjects: PredicateField
    effect: Effect = TERM_DEFAULTS["effect"]
    route_to: ModelId | None = TERM_DEFAULTS["route_to"]
    disclose: StrictBool = TERM_DEFAULTS["disclose"]
    exempt: Exemptions = Field(default_factory=Exemptions)
    on_unknown: OnUnknown = TERM_DEFAULTS["on_unknown"]
    signature: Signature | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IssueDirective:
        check_route(self.effect, self.route_to)
        check_interval(self.effective_at or self.received_at, self.expires_at, "expires_at")
        return self

    def terms(self) -> DirectiveTerms:
        """The directive's terms: its fields of the same names (see domain.terms)."""
        return DirectiveTerms.from_stored(self.model_dump(mode="json", include=DIRECTIVE_TERMS))


class AmendDirective(_Command):
    """Replaces the terms it carries from `effective_at` on; omitted terms stay as they were."""

    type: Literal["amend_directive"]
    directive: Identifier
    effective_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    models: Items[Selector] | None = Field(default=None, min_length=1)
    subjects: PredicateField | None = None
    effect: Effect | None = None
    route_to: ModelId | None = None
    disclose: StrictBool | None = None
    exempt: Exemptions | None = None
    on_unknown: OnUnknown | None = None
    signature: Signature | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> AmendDirective:
        carried = self.carried_terms()
        if not carried:
            raise ValueError("an amendment must carry at least one term to change")
        for term in sorted(carried - _NULLABLE_TERMS):
            if getattr(self, term) is None:
                raise FieldProblem(term, "cannot be null; omit it to keep the current value")
        if {"effect", "route_to"} <= carried:
            check_route(self.effect, self.route_to)
        check_interval(self.effective_at, self.expires_at, "expires_at")
        return self

    def carried_terms(self) -> set[str]:
        """The names of the terms this amendment sets (given, even as null)."""
        return self.model_fields_set & DIRECTIVE_TERMS

    def change(self) -> TermsChange:
        """The terms this amendment sets (see domain.terms); the others it keeps."""
        return TermsChange.from_stored(self.model_dump(mode="json", include=self.carried_terms()))

    def amended_terms(self) -> dict[str, Any]:
        """The terms this amendment sets, in the directive's stored form."""
        return self.change().to_stored()


_NULLABLE_TERMS = frozenset(("expires_at", "route_to"))
"""Terms an amendment may set to null: no expiry, no route target."""


class LiftDirective(_Command):
    type: Literal["lift_directive"]
    directive: Identifier
    effective_at: Timestamp | None = None
    signature: Signature | None = None


def canonical_json(command: BaseModel) -> bytes:
    """The command's one canonical form: the validated command, `command_id` included, without
    its signature; keys sorted, no whitespace, timestamps in UTC. An amendment keeps only the
    terms it carries, so `"expires_at": null` (clear the expiry) and no `expires_at` (keep it)
    differ. Officers sign it and receipts keep its digest; both derive it from the parsed
    command, so formatting of the original document does not matter."""
    data = command.model_dump(mode="json", exclude={"signature"})
    if isinstance(command, AmendDirective):
        for term in DIRECTIVE_TERMS - command.carried_terms():
            del data[term]
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def command_digest(command: BaseModel) -> str:
    """SHA-256 (hex) of `canonical_json`: what a receipt keeps to know one command again."""
    return hashlib.sha256(canonical_json(command)).hexdigest()


Command = Annotated[
    RegisterModel
    | WithdrawModel
    | ReinstateModel
    | GrantEntitlement
    | RevokeEntitlement
    | AttestNationality
    | AttestLocation
    | AttestEmployer
    | RevokeAttestation
    | IssueDirective
    | AmendDirective
    | LiftDirective,
    Field(discriminator="type"),
]

_COMMAND = TypeAdapter(Command)
COMMAND_TYPES: tuple[str, ...] = (
    "register_model", "withdraw_model", "reinstate_model", "grant_entitlement",
    "revoke_entitlement", "attest_nationality", "attest_location", "attest_employer",
    "revoke_attestation", "issue_directive", "amend_directive", "lift_directive",
)


def parse_command(data: Any) -> Command:
    """Validates one command document; raises CommandError naming the first bad field."""
    if isinstance(data, BaseModel):
        return data  # type: ignore[return-value]
    if not isinstance(data, dict):
        raise CommandError("", "a command is a JSON object")
    if "type" not in data:
        raise CommandError("type", "missing; expected one of " + ", ".join(COMMAND_TYPES))
    if not isinstance(data["type"], str) or data["type"] not in COMMAND_TYPES:
        raise CommandError(
            "type", f"unknown command type {shown(data['type'])}; expected one of "
            + ", ".join(COMMAND_TYPES)
        )
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as error:
        raise command_error_from(error) from None


def parse_command_json(text: str | bytes) -> Command:
    """Parses one JSON line into a command. Total: whatever `text` holds, the answer is a
    command or a CommandError (see `load_json`)."""
    return parse_command(load_json(text))


def command_error_from(error: ValidationError) -> CommandError:
    """The first validation error as a CommandError whose field is its dotted path."""
    first = error.errors()[0]
    location = [field_name(part) for part in first["loc"]]
    if location and location[0] in COMMAND_TYPES:
        location = location[1:]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, FieldProblem) and cause.field:
        location.append(cause.field)
    field = ".".join(location)
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "timezone_aware":
        message = "timestamp needs a UTC offset (e.g. +00:00 or Z)"
    elif isinstance(first.get("input"), OutOfRange):
        message = f"{first['input']!r} is not a number any field holds (NaN, an infinity, or " \
            "beyond 64 bits)"
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return CommandError(field, message)
