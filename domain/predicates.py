"""Subject predicates: data, never code, evaluated in Kleene three-valued logic.

A predicate answers True, False or None (unknown). Alongside the truth value it carries the
attributes whose unknown values made the answer unknown, so that a directive applied "because
we don't know" can say which facts were missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from domain.limits import MAX_LIST_ITEMS, MAX_PREDICATE_DEPTH, MAX_PREDICATE_NODES
from domain.values import check_country, check_identifier, field_name

ATTRIBUTES = ("citizenship", "residency", "location", "employer", "subject", "purpose")

Truth = bool | None
"""Kleene truth value: True, False, or None for unknown."""

Outcome = tuple[Truth, frozenset[str]]
"""A truth value and the attributes that were unknown where it is unknown (empty otherwise)."""

AttributeLookup = Callable[[str], frozenset[str] | None]
"""Gives an attribute's set of values for the subject being judged, None when unknown."""

_NO_UNKNOWNS: frozenset[str] = frozenset()
_TRUE: Outcome = (True, _NO_UNKNOWNS)
_FALSE: Outcome = (False, _NO_UNKNOWNS)


class PredicateError(ValueError):
    """A predicate document that is not in the language; `path` names the offending node."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def _junction(parts: tuple[Predicate, ...], lookup: AttributeLookup, decisive: bool) -> Outcome:
    """Kleene `all` (False decides) and `any` (True decides); otherwise an unknown part makes
    the whole unknown, naming what every unknown part was missing."""
    unknowns: set[str] = set()
    undecided = False
    for part in parts:
        truth, missing = part.evaluate(lookup)
        if truth is decisive:
            return _TRUE if decisive else _FALSE
        if truth is None:
            undecided = True
            unknowns |= missing
    if undecided:
        return (None, frozenset(unknowns))
    return _FALSE if decisive else _TRUE


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Predicate, ...]

    def evaluate(self, lookup: AttributeLookup) -> Outcome:
        return _junction(self.parts, lookup, decisive=False)

    def to_data(self) -> dict[str, Any]:
        return {"all": [part.to_data() for part in self.parts]}


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Predicate, ...]

    def evaluate(self, lookup: AttributeLookup) -> Outcome:
        return _junction(self.parts, lookup, decisive=True)

    def to_data(self) -> dict[str, Any]:
        return {"any": [part.to_data() for part in self.parts]}


@dataclass(frozen=True, slots=True)
class Not:
    part: Predicate

    def evaluate(self, lookup: AttributeLookup) -> Outcome:
        truth, missing = self.part.evaluate(lookup)
        if truth is None:
            return (None, missing)
        return _FALSE if truth else _TRUE

    def to_data(self) -> dict[str, Any]:
        return {"not": self.part.to_data()}


@dataclass(frozen=True, slots=True)
class Everyone:
    def evaluate(self, lookup: AttributeLookup) -> Outcome:
        return _TRUE

    def to_data(self) -> dict[str, Any]:
        return {"everyone": True}


@dataclass(frozen=True, slots=True)
class Membership:
    """`{ATTR: {"any_of": [...]}}` or `{ATTR: {"none_of": [...]}}`."""

    attribute: str
    test: Literal["any_of", "none_of"]
    values: frozenset[str]

    def evaluate(self, lookup: AttributeLookup) -> Outcome:
        actual = lookup(self.attribute)
        if actual is None:
            return (None, frozenset((self.attribute,)))
        meets = not actual.isdisjoint(self.values)
        return _TRUE if meets == (self.test == "any_of") else _FALSE

    def to_data(self) -> dict[str, Any]:
        return {self.attribute: {self.test: sorted(self.values)}}


@dataclass(frozen=True, slots=True)
class UsPerson:
    """Derived: a US citizen or US permanent resident."""

    expected: bool

    def evaluate(self, lookup: AttributeLookup) -> Outcome:
        citizenships = lookup("citizenship")
        residencies = lookup("residency")
        if citizenships is None or residencies is None:
            if (citizenships and "US" in citizenships) or (residencies and "US" in residencies):
                return _TRUE if self.expected else _FALSE
            return (None, frozenset(("us_person",)))
        is_us_person = "US" in citizenships or "US" in residencies
        return _TRUE if is_us_person == self.expected else _FALSE

    def to_data(self) -> dict[str, Any]:
        return {"us_person": self.expected}


Predicate = AllOf | AnyOf | Not | Everyone | Membership | UsPerson


COUNTRY_ATTRIBUTES = ("citizenship", "residency", "location")
"""Attributes whose values are ISO 3166-1 alpha-2 country codes."""


def parse_predicate(data: Any, path: str = "") -> Predicate:
    """Builds a predicate from its JSON form, naming the path of the first bad node.

    Bounded before it recurses: at most MAX_PREDICATE_DEPTH nested all/any/not, at most
    MAX_PREDICATE_NODES nodes and MAX_LIST_ITEMS items per list, so no document, however deep,
    makes it recurse further than that."""
    if isinstance(data, AllOf | AnyOf | Not | Everyone | Membership | UsPerson):
        return data
    return _Parser(checked=True).parse(data, path, 0)


def stored_predicate(data: Any) -> Predicate:
    """A predicate as an event stored it: read as it was accepted then, without the bounds and
    value checks of `parse_predicate`, so that a store written before a check was added still
    replays to the same decisions."""
    return _Parser(checked=False).parse(data, "", 0)


class _Parser:
    """One predicate document's parse, counting its nodes; `checked` applies the input bounds
    and value checks."""

    def __init__(self, checked: bool) -> None:
        self.checked = checked
        self.nodes = 0

    def parse(self, data: Any, path: str, depth: int) -> Predicate:
        if not isinstance(data, Mapping) or len(data) != 1:
            raise PredicateError(path, "a predicate is an object with exactly one key")
        self.nodes += 1
        if self.checked and self.nodes > MAX_PREDICATE_NODES:
            raise PredicateError(path, f"a predicate has at most {MAX_PREDICATE_NODES} nodes")
        ((key, body),) = data.items()
        here = f"{path}.{key}" if path else key
        if key in ("all", "any", "not"):
            if self.checked and depth >= MAX_PREDICATE_DEPTH:
                raise PredicateError(
                    here, f"all/any/not nest at most {MAX_PREDICATE_DEPTH} deep"
                )
            if key == "not":
                return Not(self.parse(body, here, depth + 1))
            if not isinstance(body, list) or not body:
                raise PredicateError(here, "expects a non-empty list of predicates")
            if self.checked:
                _check_length(body, here)
            parts = tuple(self.parse(p, f"{here}[{i}]", depth + 1) for i, p in enumerate(body))
            return AllOf(parts) if key == "all" else AnyOf(parts)
        if key == "everyone":
            if body is not True:
                raise PredicateError(here, "must be true")
            return Everyone()
        if key == "us_person":
            if not isinstance(body, bool):
                raise PredicateError(here, "must be true or false")
            return UsPerson(body)
        if key in ATTRIBUTES:
            return _parse_membership(key, body, here, self.checked)
        raise PredicateError(
            f"{path}.{field_name(key)}" if path else field_name(key),
            "unknown predicate; expected one of all, any, not, everyone, us_person, "
            f"{', '.join(ATTRIBUTES)}",
        )


def _check_length(items: list[Any], path: str) -> None:
    if len(items) > MAX_LIST_ITEMS:
        raise PredicateError(path, f"at most {MAX_LIST_ITEMS} items, not {len(items)}")


def _parse_membership(attribute: str, body: Any, path: str, checked: bool) -> Membership:
    if not isinstance(body, Mapping) or len(body) != 1:
        raise PredicateError(path, 'expects {"any_of": [...]} or {"none_of": [...]}')
    ((test, values),) = body.items()
    if test not in ("any_of", "none_of"):
        raise PredicateError(f"{path}.{field_name(test)}", "expected any_of or none_of")
    here = f"{path}.{test}"
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise PredicateError(here, "expects a list of non-empty strings")
    if not checked:
        if attribute in COUNTRY_ATTRIBUTES:
            values = [v.upper() for v in values]
        return Membership(attribute, test, frozenset(values))
    _check_length(values, here)
    check = check_country if attribute in COUNTRY_ATTRIBUTES else check_identifier
    checked = []
    for i, value in enumerate(values):
        try:
            checked.append(check(value))
        except ValueError as error:
            raise PredicateError(f"{here}[{i}]", str(error)) from None
    return Membership(attribute, test, frozenset(checked))


def predicate_json_schemas(ref: str) -> dict[str, dict[str, Any]]:
    """The predicate language as JSON Schema definitions, one per node kind (named like the
    class it parses into) and `Predicate` for any of them; `ref` formats a reference to a
    definition, e.g. "#/$defs/{model}". It describes what `parse_predicate` accepts, for
    editors and API clients; the parser stays the validator."""
    predicate = {"$ref": ref.format(model="Predicate")}
    values = {"type": "array", "items": {"type": "string", "minLength": 1}}

    def one_key(key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {key: value}, "required": [key],
                "additionalProperties": False}

    return {
        "Predicate": {
            "description": "A subject predicate: data, evaluated in three-valued logic (true, "
                           "false, unknown).",
            "anyOf": [{"$ref": ref.format(model=kind.__name__)}
                      for kind in (AllOf, AnyOf, Not, Everyone, Membership, UsPerson)],
        },
        AllOf.__name__: one_key("all", {"type": "array", "items": predicate, "minItems": 1}),
        AnyOf.__name__: one_key("any", {"type": "array", "items": predicate, "minItems": 1}),
        Not.__name__: one_key("not", predicate),
        Everyone.__name__: one_key("everyone", {"const": True}),
        UsPerson.__name__: one_key("us_person", {"type": "boolean"}),
        Membership.__name__: {
            "type": "object", "minProperties": 1, "maxProperties": 1,
            "propertyNames": {"enum": list(ATTRIBUTES)},
            "additionalProperties": {"oneOf": [one_key("any_of", values),
                                               one_key("none_of", values)]},
            "description": '`{ATTR: {"any_of": [...]}}` or `{ATTR: {"none_of": [...]}}`.',
        },
    }
