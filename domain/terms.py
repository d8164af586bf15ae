"""A directive's terms: one type for every reader of them.

`DirectiveTerms` is what a directive says: the models it covers, the subjects it applies to, its
effect and route target, whether it is disclosed, who is exempt, what an unknown attribute
means, and when it expires. The issue command builds it (`IssueDirective.terms`), the aggregate
stores it (`Directive.issue`), the fact base compiles it (`DirectiveFacts.terms`), and the
what-if and the enforcer read it. An amendment carries only the terms it changes: a
`TermsChange`, in which a term it does not carry is `KEEP` (an explicit `None` is a value:
`expires_at=None` clears the expiry).

**Stored form.** An event stores its terms as the JSON object it always has: the commands' field
names (`models`, `subjects`, `exempt`, ...) with their JSON values, in the commands' field
order; an amendment only the terms it carries (`to_stored`, read back by `from_stored`). The
events keep that object as their `terms` attribute and give the typed terms from it
(`Directive.Issued.issued_terms`, `Directive.Amended.change`). A custom eventsourcing
transcoding is not used on purpose: the JSON transcoder writes a registered type as
`{"_type_": ..., "_data_": ...}` and only turns that shape back into the type, so new events
would store other bytes (other chain digests) and the events already stored would still read
as plain objects. A term an older event does not carry, stored before the term existed, reads
as its default (`TERM_DEFAULTS`).

**Adding a term**: a field of `DirectiveTerms` and of `TermsChange` with its stored form in
`_TERMS` (here), the field of `IssueDirective` and `AmendDirective` (domain/commands.py, with
its description for the reference in interlock/reference.py), and the field of their Avro
schemas (schemas/interlock.v1/{issue,amend}_directive, a new version each).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import TypeAdapter

from domain.predicates import Predicate, stored_predicate
from domain.selectors import covers

Effect = Literal["deny", "route"]
OnUnknown = Literal["apply", "ignore", "skip"]
"""`apply` fails closed; `ignore` (alias `skip`) lets an unknown predicate pass."""


@dataclass(frozen=True, slots=True)
class Exempt:
    """The subjects and orgs a directive does not apply to, in the order they were given."""

    subjects: tuple[str, ...] = ()
    orgs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DirectiveTerms:
    """A directive's terms in force: every term has a value."""

    selectors: tuple[str, ...]
    """The models covered: exact ids, `family:NAME` or `*` (stored as `models`)."""
    predicate: Predicate
    """The subjects it applies to (stored as `subjects`)."""
    effect: Effect = "deny"
    route_to: str | None = None
    disclose: bool = False
    exempt: Exempt = Exempt()
    on_unknown: OnUnknown = "apply"
    expires_at: datetime | None = None
    exempt_subjects: frozenset[str] = field(init=False, repr=False, compare=False)
    exempt_orgs: frozenset[str] = field(init=False, repr=False, compare=False)
    _covers: dict[str, bool] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Sets for the lookups a decision makes; `exempt` keeps the order that is stored.
        object.__setattr__(self, "exempt_subjects", frozenset(self.exempt.subjects))
        object.__setattr__(self, "exempt_orgs", frozenset(self.exempt.orgs))

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> DirectiveTerms:
        """The terms from an Issued event's stored form; a term not stored has its default."""
        return cls(**_decoded(stored))

    def to_stored(self) -> dict[str, Any]:
        """The stored form: every term, in the commands' field order."""
        return {term.stored: term.encode(getattr(self, term.name)) for term in _TERMS}

    def covers(self, model: str, family: str) -> bool:
        return covers(self.selectors, self._covers, model, family)

    def exempts(self, subject: str, employer: frozenset[str] | None) -> bool:
        """The subject, or one of its employers, is exempt from these terms."""
        return subject in self.exempt_subjects or bool(
            employer and not employer.isdisjoint(self.exempt_orgs)
        )

    def applies_on(self, truth: bool | None) -> bool:
        """A true predicate applies the terms; an unknown one when `on_unknown` says so."""
        return truth is True or (truth is None and self.on_unknown == "apply")


class Keep(Enum):
    """The type of KEEP, so that a term's type says it may be left as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP
"""A term an amendment does not carry: the one in force stays."""


@dataclass(frozen=True, slots=True)
class TermsChange:
    """The terms an amendment replaces from its start; the others are KEEP."""

    selectors: tuple[str, ...] | Keep = KEEP
    predicate: Predicate | Keep = KEEP
    effect: Effect | Keep = KEEP
    route_to: str | Keep | None = KEEP
    disclose: bool | Keep = KEEP
    exempt: Exempt | Keep = KEEP
    on_unknown: OnUnknown | Keep = KEEP
    expires_at: datetime | Keep | None = KEEP

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> TermsChange:
        """The change from an Amended event's stored form: the terms it holds, no others."""
        return cls(**_decoded(stored))

    def to_stored(self) -> dict[str, Any]:
        """The stored form: the terms carried, in the commands' field order."""
        return {term.stored: term.encode(value) for term in _TERMS
                if (value := getattr(self, term.name)) is not KEEP}

    def carried(self) -> dict[str, Any]:
        """The terms carried, by attribute name."""
        return {term.name: value for term in _TERMS
                if (value := getattr(self, term.name)) is not KEEP}

    def applied_to(self, terms: DirectiveTerms) -> DirectiveTerms:
        """`terms` with the ones this change carries replaced."""
        return replace(terms, **self.carried())

    def expiry(self) -> datetime | None:
        """The expiry it sets; None when it clears the expiry or does not change it."""
        return None if self.expires_at is KEEP else self.expires_at


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


_TIME = TypeAdapter(datetime)


def _time_text(value: datetime | None) -> str | None:
    """ISO text exactly as the commands' JSON form writes it (pydantic: `...Z`)."""
    return None if value is None else _TIME.dump_python(value, mode="json")


def _exempt(value: Any) -> Exempt:
    value = value or {}
    return Exempt(tuple(value.get("subjects", ())), tuple(value.get("orgs", ())))


def _exempt_data(value: Exempt) -> dict[str, list[str]]:
    return {"subjects": list(value.subjects), "orgs": list(value.orgs)}


def _predicate_data(value: Predicate) -> dict[str, Any]:
    return value.to_data()


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class _Term:
    stored: str
    """Its name in the stored form and in the commands."""
    name: str
    """Its attribute of DirectiveTerms and TermsChange."""
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


_TERMS = (
    _Term("expires_at", "expires_at", _time_text, _time),
    _Term("models", "selectors", list, tuple),
    _Term("subjects", "predicate", _predicate_data, stored_predicate),
    _Term("effect", "effect", _same, _same),
    _Term("route_to", "route_to", _same, _same),
    _Term("disclose", "disclose", _same, bool),
    _Term("exempt", "exempt", _exempt_data, _exempt),
    _Term("on_unknown", "on_unknown", _same, _same),
)
"""Each term's stored name, attribute, and stored form, in the commands' field order (the order
the stored JSON objects keep)."""


def _decoded(stored: Mapping[str, Any]) -> dict[str, Any]:
    return {term.name: term.decode(stored[term.stored]) for term in _TERMS
            if term.stored in stored}


DIRECTIVE_TERMS = frozenset(term.stored for term in _TERMS)
"""The names of a directive's terms, as stored on its Issued and Amended events."""

_DEFAULTS = {f.name: f.default for f in fields(DirectiveTerms)
             if f.init and f.default is not MISSING}
TERM_DEFAULTS: dict[str, Any] = dict(sorted(
    (term.stored, term.encode(_DEFAULTS[term.name])) for term in _TERMS if term.name in _DEFAULTS
))
"""What a term not stored means, in the stored form (events stored before a term existed do
not carry it)."""


def terms_expiry(terms: Mapping[str, Any]) -> datetime | None:
    """The `expires_at` of stored directive terms (ISO text on the event), as a datetime."""
    return _time(terms.get("expires_at"))
