"""The field types of commands: timestamps, ids, free text, country codes, model selectors,
bounded lists and predicates, each validated on the way in; and the checks that span fields."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
)

from domain.errors import FieldProblem
from domain.limits import EARLIEST_TIME, LATEST_TIME, MAX_ID_CHARS, MAX_LIST_ITEMS, MAX_TEXT_CHARS
from domain.predicates import Predicate, parse_predicate
from domain.values import check_country, check_identifier, check_text


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


def check_interval(
    start: datetime | None, end: datetime | None, field: str = "valid_until"
) -> None:
    """An interval ends after it starts; `field` names its end."""
    if start is not None and end is not None and end <= start:
        raise FieldProblem(field, "must be after the start of the interval")


def check_route(effect: str | None, route_to: str | None) -> None:
    """A route directive names its target; a deny directive has none."""
    if effect == "route" and route_to is None:
        raise FieldProblem("route_to", 'a "route" directive needs route_to')
    if effect == "deny" and route_to is not None:
        raise FieldProblem("route_to", 'route_to is only for "route" directives')
