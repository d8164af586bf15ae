"""Decision requests, validated at the boundary like commands."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

from domain.commands import CountryCode, Identifier, Timestamp
from domain.decision import NO_CONTEXT, Context

MAX_POSITION = 2**63 - 1
"""Positions are the store's 64-bit notification ids."""


class DecisionRequest(BaseModel):
    """May `subject` use `model` at `at`, as known at position `as_of` or time `known_at`?"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Identifier
    model: Identifier
    at: Timestamp | None = None
    as_of: Annotated[int, Strict(), Field(ge=0, le=MAX_POSITION)] | None = None
    """A JSON integer: `true`, `"5"` and `5.0` are refused, not read as positions."""
    known_at: Timestamp | None = None
    location: CountryCode | None = None
    purpose: Identifier | None = None

    @property
    def context(self) -> Context:
        if self.location is None and self.purpose is None:
            return NO_CONTEXT
        return Context(self.location, self.purpose)
