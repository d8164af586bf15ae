"""Commands: the only input the domain accepts, validated at the boundary.

Every command is one JSON object whose `type` picks its model. Unknown fields, unknown types and
timestamps without a UTC offset are errors, each naming the field it is about.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from domain.predicates import Predicate, parse_predicate


class CommandError(ValueError):
    """A command that cannot be applied; `field` names what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class CommandConflict(CommandError):
    """A `command_id` already applied with a different command: refused, nothing stored."""


class FieldProblem(ValueError):
    """Raised by checks that span fields, to name the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-05:00 is past the last representable UTC time
        raise ValueError("out of range once converted to UTC") from None


def _iso_only(value: Any) -> Any:
    """pydantic would read 1795734060 as a Unix time; the command format says ISO-8601."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("expected an ISO-8601 timestamp with an offset, not a number")
    return value


_NUMBER = re.compile(r"\s*[-+]?\d+(\.\d*)?\s*")

Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_to_utc)]
"""ISO-8601 with an offset, normalised to UTC; a timestamp without an offset is rejected."""

Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
CountryCode = Annotated[
    str,
    BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v),
    StringConstraints(pattern=r"^[A-Z]{2}$"),
]
"""ISO 3166 alpha-2, upper-cased on the way in."""
ModelId = Annotated[Identifier, StringConstraints(pattern=r"^[^\s:*]+$")]
"""An exact model version id: no selector syntax."""

Selector = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^(\*|family:[^\s:]+|[^\s:*]+)$"),
]
"""An exact model id (`fable-5`), a family (`family:fable`), or `*`."""

PredicateField = Annotated[
    Predicate,
    BeforeValidator(parse_predicate),
    PlainSerializer(lambda p: p.to_data(), return_type=dict),
]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: Identifier | None = None


class RegisterModel(_Command):
    type: Literal["register_model"]
    model: ModelId
    family: Identifier


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
    models: list[Selector] = Field(min_length=1)
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None

    @model_validator(mode="after")
    def _ordered(self) -> GrantEntitlement:
        _check_interval(self.valid_from, self.valid_until)
        return self


class RevokeEntitlement(_Command):
    type: Literal["revoke_entitlement"]
    entitlement: Identifier
    effective_at: Timestamp | None = None


class AttestNationality(_Command):
    type: Literal["attest_nationality"]
    subject: Identifier
    citizenships: list[CountryCode] = Field(default_factory=list)
    residencies: list[CountryCode] = Field(default_factory=list)
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    source: Identifier
    evidence: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AttestNationality:
        _check_interval(self.valid_from, self.valid_until)
        return self


class AttestLocation(_Command):
    type: Literal["attest_location"]
    subject: Identifier
    country: CountryCode
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    source: Identifier
    evidence: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AttestLocation:
        _check_interval(self.valid_from, self.valid_until)
        return self


class AttestEmployer(_Command):
    type: Literal["attest_employer"]
    subject: Identifier
    org: Identifier
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None
    source: Identifier
    evidence: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AttestEmployer:
        _check_interval(self.valid_from, self.valid_until)
        return self


AttestationKind = Literal["nationality", "location", "employer"]


class RevokeAttestation(_Command):
    type: Literal["revoke_attestation"]
    subject: Identifier
    kind: AttestationKind
    effective_at: Timestamp | None = None


class Exemptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subjects: list[Identifier] = Field(default_factory=list)
    orgs: list[Identifier] = Field(default_factory=list)


class Signature(BaseModel):
    """An officer's Ed25519 signature over the command's canonical JSON (see `canonical_json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: Identifier
    value: Annotated[str, StringConstraints(min_length=1)]
    """Base64 of the 64-byte signature."""


OnUnknown = Literal["apply", "ignore", "skip"]
"""`apply` fails closed; `ignore` (alias `skip`) lets an unknown predicate pass."""


class IssueDirective(_Command):
    type: Literal["issue_directive"]
    directive: Identifier
    authority: str = ""
    reference: str = ""
    received_at: Timestamp | None = None
    effective_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    models: list[Selector] = Field(min_length=1)
    subjects: PredicateField
    effect: Literal["deny", "route"] = "deny"
    route_to: ModelId | None = None
    disclose: bool = False
    exempt: Exemptions = Field(default_factory=Exemptions)
    on_unknown: OnUnknown = "apply"
    signature: Signature | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IssueDirective:
        check_route(self.effect, self.route_to)
        _check_interval(self.effective_at or self.received_at, self.expires_at, "expires_at")
        return self


class AmendDirective(_Command):
    """Replaces the terms it carries from `effective_at` on; omitted terms stay as they were."""

    type: Literal["amend_directive"]
    directive: Identifier
    effective_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    models: list[Selector] | None = Field(default=None, min_length=1)
    subjects: PredicateField | None = None
    effect: Literal["deny", "route"] | None = None
    route_to: ModelId | None = None
    disclose: bool | None = None
    exempt: Exemptions | None = None
    on_unknown: OnUnknown | None = None
    signature: Signature | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> AmendDirective:
        if not self.amended_terms():
            raise ValueError("an amendment must carry at least one term to change")
        return self

    def amended_terms(self) -> dict[str, Any]:
        """The terms this amendment sets, in the directive's stored form."""
        carried = self.model_fields_set - {
            "type", "directive", "effective_at", "command_id", "signature"
        }
        return self.model_dump(mode="json", include=carried)


class LiftDirective(_Command):
    type: Literal["lift_directive"]
    directive: Identifier
    effective_at: Timestamp | None = None
    signature: Signature | None = None


def canonical_json(command: BaseModel) -> bytes:
    """The bytes an officer signs: the validated command without its signature and command id,
    keys sorted, no whitespace, timestamps in UTC. Signer and verifier both derive it from the
    parsed command, so formatting of the original document does not matter."""
    data = command.model_dump(mode="json", exclude={"signature", "command_id"})
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


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
    if data["type"] not in COMMAND_TYPES:
        raise CommandError(
            "type", f"unknown command type {data['type']!r}; expected one of "
            + ", ".join(COMMAND_TYPES)
        )
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as error:
        raise command_error_from(error) from None


def parse_command_json(text: str | bytes) -> Command:
    """Parses one JSON line into a command."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError("", f"not valid JSON: {error.msg} at column {error.colno}") from None
    return parse_command(data)


def command_error_from(error: ValidationError) -> CommandError:
    """The first validation error as a CommandError whose field is its dotted path."""
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    if location and location[0] in COMMAND_TYPES:
        location = location[1:]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, FieldProblem):
        location.append(cause.field)
    field = ".".join(location)
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "timezone_aware":
        message = "timestamp needs a UTC offset (e.g. +00:00 or Z)"
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return CommandError(field, message)


def _check_interval(
    start: datetime | None, end: datetime | None, field: str = "valid_until"
) -> None:
    if start is not None and end is not None and end <= start:
        raise FieldProblem(field, "must be after the start of the interval")


def check_route(effect: str | None, route_to: str | None) -> None:
    """A route directive names its target; a deny directive has none."""
    if effect == "route" and route_to is None:
        raise FieldProblem("route_to", 'a "route" directive needs route_to')
    if effect == "deny" and route_to is not None:
        raise FieldProblem("route_to", 'route_to is only for "route" directives')
