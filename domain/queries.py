"""Decision requests, validated at the boundary like commands (the CLI and HTTP share them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from domain.commands import (
    CommandError,
    CountryCode,
    Identifier,
    Timestamp,
    command_error_from,
    load_json,
)
from domain.decision import NO_CONTEXT, Context

MAX_POSITION = 2**63 - 1
"""Positions are the store's 64-bit notification ids."""

Position = Annotated[int, Strict(), Field(ge=0, le=MAX_POSITION)]
"""A store position: a JSON integer (not a string, float or boolean) in 0..MAX_POSITION."""


class DecisionRequest(BaseModel):
    """May `subject` use `model` at `at`, as known at position `as_of` or time `known_at`?"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Identifier
    model: Identifier
    at: Timestamp | None = None
    as_of: Position | None = None
    known_at: Timestamp | None = None
    location: CountryCode | None = None
    purpose: Identifier | None = None

    @property
    def context(self) -> Context:
        if self.location is None and self.purpose is None:
            return NO_CONTEXT
        return Context(self.location, self.purpose)


def parse_decision_request(data: Any) -> DecisionRequest:
    """Validates one request document; raises CommandError naming the first bad field."""
    if not isinstance(data, dict):
        raise CommandError("", "a decision request is a JSON object")
    try:
        return DecisionRequest.model_validate(data)
    except ValidationError as error:
        raise command_error_from(error) from None


def parse_decision_request_json(text: str | bytes) -> DecisionRequest:
    """One JSON line of `decide --batch` as a request: total like `parse_command_json`, read
    by the same strict reader (duplicate keys, NaN, invalid UTF-8, size: see `load_json`)."""
    return parse_decision_request(load_json(text))
