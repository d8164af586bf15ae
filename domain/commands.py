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
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from domain.limits import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_COMMAND_BYTES,
    MAX_ID_CHARS,
    MAX_LIST_ITEMS,
    MAX_TEXT_CHARS,
)
from domain.predicates import Predicate, parse_predicate
from domain.values import check_country, check_identifier, check_text, field_name, shown


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
    # Years 2..9998 convert to UTC without overflow; the bounds are then checked in UTC.
    if not EARLIEST_TIME.year <= value.year < LATEST_TIME.year:
        raise ValueError(_OUT_OF_RANGE)
    utc = value.astimezone(UTC)
    if not EARLIEST_TIME <= utc < LATEST_TIME:
        raise ValueError(_OUT_OF_RANGE)
    return utc


_OUT_OF_RANGE = (
    f"timestamp out of range: from {EARLIEST_TIME.isoformat()} up to {LATEST_TIME.isoformat()}"
)


def _iso_only(value: Any) -> Any:
    """pydantic would read 1795734060 as a Unix time; the command format says ISO-8601."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("expected an ISO-8601 timestamp with an offset, not a number")
    return value


_NUMBER = re.compile(r"\s*[-+]?\d+(\.\d*)?\s*")

Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_to_utc)]
"""ISO-8601 with an offset, normalised to UTC, within [EARLIEST_TIME, LATEST_TIME); a timestamp
without an offset is rejected."""

def _described(**schema: Any) -> Any:
    """JSON Schema for editors and validators (docs/schema); the validators stay the rule."""
    return Field(json_schema_extra=schema)


Identifier = Annotated[
    str,
    Strict(),
    StringConstraints(strip_whitespace=True, min_length=1),
    AfterValidator(check_identifier),
    _described(maxLength=MAX_ID_CHARS, pattern=r"^\S+$"),
]
"""An id: printable characters without whitespace, at most MAX_ID_CHARS (see domain.values)."""
Text = Annotated[str, Strict(), AfterValidator(check_text), _described(maxLength=MAX_TEXT_CHARS)]
"""Free text: one line of at most MAX_TEXT_CHARS, no control characters (see domain.values)."""
NonEmptyText = Annotated[Text, StringConstraints(min_length=1)]
CountryCode = Annotated[
    str, Strict(), AfterValidator(check_country), _described(pattern="^[A-Za-z]{2}$")
]
"""ISO 3166-1 alpha-2, upper-cased on the way in."""


def _no_selector_syntax(value: str) -> str:
    if ":" in value or "*" in value:
        raise ValueError('an exact id: no ":" or "*" (those make selectors)')
    return value


ModelId = Annotated[
    Identifier, AfterValidator(_no_selector_syntax),
    _described(maxLength=MAX_ID_CHARS, pattern=r"^[^\s:*]+$"),
]
"""An exact model version id (or family): no selector syntax."""


def _selector(value: str) -> str:
    if value == "*":
        return value
    family = value.removeprefix("family:")
    if not family:
        raise ValueError('"family:" needs a family name')
    _no_selector_syntax(family)
    return value


Selector = Annotated[
    Identifier, AfterValidator(_selector),
    _described(maxLength=MAX_ID_CHARS, pattern=r"^(\*|family:[^\s:*]+|[^\s:*]+)$"),
]
"""An exact model id (`fable-5`), a family (`family:fable`), or `*`."""

_Item = TypeVar("_Item")
Items = Annotated[list[_Item], Field(max_length=MAX_LIST_ITEMS)]
"""A list of at most MAX_LIST_ITEMS items."""

PredicateField = Annotated[
    Predicate,
    BeforeValidator(parse_predicate),
    PlainSerializer(lambda p: p.to_data(), return_type=dict),
]


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
        _check_interval(self.valid_from, self.valid_until)
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
        _check_interval(self.valid_from, self.valid_until)
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
        _check_interval(self.valid_from, self.valid_until)
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

    subjects: Items[Identifier] = Field(default_factory=list)
    orgs: Items[Identifier] = Field(default_factory=list)


class Signature(BaseModel):
    """An officer's Ed25519 signature over the command's canonical JSON (see `canonical_json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: Identifier
    value: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
    """Base64 of the 64-byte signature."""


OnUnknown = Literal["apply", "ignore", "skip"]
"""`apply` fails closed; `ignore` (alias `skip`) lets an unknown predicate pass."""


class IssueDirective(_Command):
    type: Literal["issue_directive"]
    directive: Identifier
    authority: Text = ""
    reference: Text = ""
    received_at: Timestamp | None = None
    effective_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    models: Items[Selector] = Field(min_length=1)
    subjects: PredicateField
    effect: Literal["deny", "route"] = "deny"
    route_to: ModelId | None = None
    disclose: StrictBool = False
    exempt: Exemptions = Field(default_factory=Exemptions)
    on_unknown: OnUnknown = "apply"
    signature: Signature | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IssueDirective:
        check_route(self.effect, self.route_to)
        _check_interval(self.effective_at or self.received_at, self.expires_at, "expires_at")
        return self

    def stored_terms(self) -> dict[str, Any]:
        """The directive's terms in their stored form: every term an amendment may change."""
        return self.model_dump(mode="json", include=DIRECTIVE_TERMS)


class AmendDirective(_Command):
    """Replaces the terms it carries from `effective_at` on; omitted terms stay as they were."""

    type: Literal["amend_directive"]
    directive: Identifier
    effective_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    models: Items[Selector] | None = Field(default=None, min_length=1)
    subjects: PredicateField | None = None
    effect: Literal["deny", "route"] | None = None
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
        _check_interval(self.effective_at, self.expires_at, "expires_at")
        return self

    def carried_terms(self) -> set[str]:
        """The names of the terms this amendment sets (given, even as null)."""
        return self.model_fields_set - _NOT_TERMS

    def amended_terms(self) -> dict[str, Any]:
        """The terms this amendment sets, in the directive's stored form."""
        return self.model_dump(mode="json", include=self.carried_terms())


_NOT_TERMS = frozenset(("type", "directive", "effective_at", "command_id", "signature"))
DIRECTIVE_TERMS = frozenset(AmendDirective.model_fields) - _NOT_TERMS
"""The names of a directive's terms, as stored on its Issued and Amended events."""


def _stored_default(name: str) -> Any:
    default = IssueDirective.model_fields[name].get_default(call_default_factory=True)
    return default.model_dump(mode="json") if isinstance(default, BaseModel) else default


TERM_DEFAULTS: dict[str, Any] = {
    name: _stored_default(name)
    for name in sorted(DIRECTIVE_TERMS) if not IssueDirective.model_fields[name].is_required()
}
"""What a term not stored means: the command's default (events stored before a term existed
do not carry it)."""
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


def load_json(text: str | bytes, max_bytes: int = MAX_COMMAND_BYTES) -> Any:
    """One JSON document of at most `max_bytes` UTF-8 bytes, read strictly; CommandError for
    anything else, so that no input raises anything but that.

    Refused: a larger document (before it is parsed), bytes that are not UTF-8, `NaN` and
    `Infinity`, a key given twice in one object (naming the key; JSON readers disagree on which
    one wins), nesting deeper than the parser's recursion limit. A number too large for a
    64-bit integer, or a float that overflows, is read as a value no field accepts, so the
    field that holds it is named."""
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if len(raw) > max_bytes:
            raise CommandError(
                "", f"{len(raw):,} bytes; the limit for one document is {max_bytes:,}"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            # Read with the bad bytes kept as lone surrogates, to name the value holding them.
            where = _fault_path(raw.decode("utf-8", "surrogateescape"), strings=True)
            raise CommandError(where or "", f"not valid UTF-8 (byte {error.start})") from None
    elif isinstance(text, str):
        size = len(text) if len(text) > max_bytes else len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise CommandError("", f"{size:,} bytes; the limit for one document is {max_bytes:,}")
    else:
        raise CommandError("", "expected JSON text")
    try:
        document = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise CommandError("", f"not valid JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise CommandError("", "not valid JSON: nested too deeply") from None
    except CommandError as error:
        # Objects are built innermost first, so the hook knows the key but not where it is:
        # read once more, marking instead of refusing, to name the whole path.
        raise CommandError(_fault_path(text) or error.field, error.message) from None
    if "\\ud" in text.lower():  # an escaped surrogate: paired is text, a lone one is not
        where = _fault_path(text, strings=True)
        if where is not None:
            raise CommandError(where, "a lone surrogate escape (\\ud800-\\udfff) is not text")
    return document


class OutOfRange:
    """A JSON number no field can hold (NaN, an infinity, an integer beyond 64 bits): kept as a
    value every field refuses, so the refusal names the field."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return shown(self.text)


class _Marked(dict[str, Any]):
    """An object read by `_fault_path`'s decoder, with the key that is at fault in it."""

    fault = ""


def _mark_faults(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    marked = _Marked(pairs)
    try:
        _unique_keys(pairs)
    except CommandError as error:
        marked.fault = error.field
    return marked


def _fault_path(text: str, strings: bool = False) -> str | None:
    """The dotted path (`commands.3.subject`) of the first key `_unique_keys` refuses, or with
    `strings` of the first string that is not text (holds a lone surrogate); None if none."""
    try:
        document = json.JSONDecoder(
            object_pairs_hook=_mark_faults, parse_constant=_not_a_number, parse_int=_integer,
            parse_float=_float,
        ).decode(text)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Marked) and value.fault:
            return ".".join((*path, value.fault))
        if strings and isinstance(value, str) and not _encodable(value):
            return ".".join(path)
        if isinstance(value, dict):
            items = [(item, (*path, field_name(key))) for key, item in value.items()]
        elif isinstance(value, list):
            items = [(item, (*path, str(number))) for number, item in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each object of the document: its keys once each, and each a Unicode string."""
    for key, _ in pairs:
        if not key.isascii() and not _encodable(key):
            raise CommandError(field_name(key), "a key with a lone surrogate (\\ud800-\\udfff)")
    document = dict(pairs)
    if len(document) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise CommandError(field_name(key), "duplicate key: give each field once")
            seen.add(key)
    return document


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_a_number(text: str) -> OutOfRange:
    return OutOfRange(text)


def _integer(text: str) -> int | OutOfRange:
    return int(text) if len(text) <= _MAX_INTEGER_DIGITS else OutOfRange(text)


def _float(text: str) -> float | OutOfRange:
    value = float(text)
    return value if math.isfinite(value) else OutOfRange(text)


_MAX_INTEGER_DIGITS = 20
"""Positions are 64-bit; longer digit strings are refused before Python converts them (its own
limit, 4,300 digits, raises ValueError)."""

_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_not_a_number, parse_int=_integer,
    parse_float=_float,
)
"""Built once: `json.loads` with hooks would build a decoder per call."""


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
