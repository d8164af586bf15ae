"""What the fact base keeps per model version, entitlement and directive: each one's own
changes with their valid times and positions, so that whether it holds at valid time t, as
known at position p, is a lookup (the subjects' facts are in `domain.subjects`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.selectors import covers as _covers
from domain.terms import DirectiveTerms, TermsChange


@dataclass(slots=True)
class ModelFacts:
    model: str
    family: str
    position: int
    changes: list[tuple[datetime, int, bool]] = field(default_factory=list)
    """(effective_at, position, withdrawn) in position order."""

    def withdrawn(self, at: datetime, as_of: int) -> bool:
        latest: tuple[datetime, int, bool] | None = None
        for change in self.changes:
            if change[1] <= as_of and change[0] <= at and (latest is None or change >= latest):
                latest = change
        return latest is not None and latest[2]


@dataclass(slots=True)
class EntitlementFacts:
    entitlement: str
    grantee_kind: str
    grantee: str
    selectors: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime | None
    position: int
    recorded_at: datetime
    _revocations: list[tuple[datetime, int]] | None = None
    """None until the first revocation: most entitlements are never revoked."""
    _covers: dict[str, bool] = field(default_factory=dict)

    @property
    def revocations(self) -> list[tuple[datetime, int]]:
        """(effective_at, position) of each revocation, in position order."""
        if self._revocations is None:
            self._revocations = []
        return self._revocations

    def active(self, at: datetime, as_of: int) -> bool:
        if self.position > as_of or at < self.valid_from:
            return False
        if self.valid_until is not None and at >= self.valid_until:
            return False
        revocations = self._revocations
        return not revocations or not any(
            pos <= as_of and eff <= at for eff, pos in revocations)

    def covers(self, model: str, family: str) -> bool:
        return _covers(self.selectors, self._covers, model, family)


@dataclass(slots=True)
class DirectiveFacts:
    directive: str
    authority: str
    reference: str
    received_at: datetime
    effective_at: datetime
    position: int
    recorded_at: datetime
    base: dict[str, Any]
    """The terms as issued, in their stored form (see domain.terms), as the event holds them."""
    amendments: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)
    """(effective_at, position, the terms it changes in their stored form) of each amendment."""
    lift: tuple[datetime, int] | None = None
    _compiled: dict[tuple[int, ...], DirectiveTerms] = field(default_factory=dict)

    def terms(self, at: datetime, as_of: int) -> DirectiveTerms:
        """The terms in force at `at`: each amendment replaces what it carries from its start."""
        if not self.amendments:
            return self.terms_with(())
        applied = sorted(
            (a for a in self.amendments if a[1] <= as_of and a[0] <= at), key=lambda a: a[:2]
        )
        return self.terms_with(tuple(applied))

    def all_terms(self) -> list[DirectiveTerms]:
        """The terms as issued and as each amendment would make them on its own: together they
        hold every selector and predicate the directive has ever had."""
        return [self.terms_with(())] + [self.terms_with((a,)) for a in self.amendments]

    def terms_with(self, amendments: tuple[tuple[datetime, int, dict[str, Any]], ...]) -> (
        DirectiveTerms
    ):
        key = tuple(a[1] for a in amendments)
        terms = self._compiled.get(key)
        if terms is None:
            terms = DirectiveTerms.from_stored(self.base)
            for _, _, changes in amendments:
                terms = TermsChange.from_stored(changes).applied_to(terms)
            self._compiled[key] = terms
        return terms

    def active_terms(self, at: datetime, as_of: int) -> DirectiveTerms | None:
        """The terms when the directive is in force at `at` as known at `as_of`, else None."""
        if self.position > as_of or at < self.effective_at:
            return None
        if self.lift is not None and self.lift[1] <= as_of and self.lift[0] <= at:
            return None
        terms = self.terms(at, as_of)
        if terms.expires_at is not None and at >= terms.expires_at:
            return None
        return terms

    def scoping_terms(
        self, model: str, family: str, at: datetime, as_of: int
    ) -> DirectiveTerms | None:
        """The terms when the directive is in force at `at` and they cover `model`, else None."""
        terms = self.active_terms(at, as_of)
        return terms if terms is not None and terms.covers(model, family) else None
