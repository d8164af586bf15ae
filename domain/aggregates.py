"""Aggregates: every fact Interlock knows is one of their events, never an update.

Each event carries its valid time (`effective_at`, `valid_from`, `valid_until`) as given by the
command; its `timestamp` is the recorded time. Methods check invariants before they trigger an
event, so a refused command leaves its aggregate untouched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.command_fields import check_route
from domain.errors import CommandError, FieldProblem
from domain.terms import DirectiveTerms, TermsChange, terms_expiry


def _key(kind: str, name: str) -> UUID:
    """Aggregates are found by name: the id is a name-based UUID."""
    return uuid5(NAMESPACE_URL, f"interlock:{kind}/{name}")


def model_key(model: str) -> UUID:
    return _key("model", model)


def entitlement_key(entitlement: str) -> UUID:
    return _key("entitlement", entitlement)


def subject_key(subject: str) -> UUID:
    return _key("subject", subject)


def directive_key(directive: str) -> UUID:
    return _key("directive", directive)


def receipt_key(command_id: str) -> UUID:
    return _key("command", command_id)


class ModelVersion(Aggregate):
    """A servable model version such as `fable-5` of family `fable`."""

    class Registered(Aggregate.Created):
        model: str
        family: str

    class Withdrawn(Aggregate.Event):
        effective_at: datetime

        def apply(self, aggregate: ModelVersion) -> None:
            aggregate.withdrawn = True

    class Reinstated(Aggregate.Event):
        effective_at: datetime

        def apply(self, aggregate: ModelVersion) -> None:
            aggregate.withdrawn = False

    def __init__(self, model: str, family: str) -> None:
        self.model = model
        self.family = family
        self.withdrawn = False

    @classmethod
    def register(cls, model: str, family: str, recorded_at: datetime) -> ModelVersion:
        return cls._create(
            cls.Registered, id=model_key(model), timestamp=recorded_at, model=model, family=family
        )

    def withdraw(self, effective_at: datetime, recorded_at: datetime) -> None:
        if self.withdrawn:
            raise CommandError("model", f"{self.model} is already withdrawn")
        self.trigger_event(self.Withdrawn, effective_at=effective_at, timestamp=recorded_at)

    def reinstate(self, effective_at: datetime, recorded_at: datetime) -> None:
        if not self.withdrawn:
            raise CommandError("model", f"{self.model} is not withdrawn")
        self.trigger_event(self.Reinstated, effective_at=effective_at, timestamp=recorded_at)


class Entitlement(Aggregate):
    """A grant of model access to one subject or to every employee of an org."""

    class Granted(Aggregate.Created):
        entitlement: str
        grantee_kind: str
        grantee: str
        models: list[str]
        valid_from: datetime
        valid_until: datetime | None

    class Revoked(Aggregate.Event):
        effective_at: datetime

        def apply(self, aggregate: Entitlement) -> None:
            aggregate.revoked = True

    def __init__(
        self,
        entitlement: str,
        grantee_kind: str,
        grantee: str,
        models: list[str],
        valid_from: datetime,
        valid_until: datetime | None,
    ) -> None:
        self.entitlement = entitlement
        self.grantee_kind = grantee_kind
        self.grantee = grantee
        self.models = models
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.revoked = False

    @classmethod
    def grant(
        cls,
        entitlement: str,
        grantee_kind: str,
        grantee: str,
        models: list[str],
        valid_from: datetime,
        valid_until: datetime | None,
        recorded_at: datetime,
    ) -> Entitlement:
        return cls._create(
            cls.Granted,
            id=entitlement_key(entitlement),
            timestamp=recorded_at,
            entitlement=entitlement,
            grantee_kind=grantee_kind,
            grantee=grantee,
            models=models,
            valid_from=valid_from,
            valid_until=valid_until,
        )

    def revoke(self, effective_at: datetime, recorded_at: datetime) -> None:
        if self.revoked:
            raise CommandError("entitlement", f"{self.entitlement} is already revoked")
        self.trigger_event(self.Revoked, effective_at=effective_at, timestamp=recorded_at)


class Subject(Aggregate):
    """A person whose access is decided; it holds the attestations about them."""

    class Registered(Aggregate.Created):
        subject: str

    class Attested(Aggregate.Event):
        """What every attestation carries: when it holds, and where it comes from."""

        valid_from: datetime
        valid_until: datetime | None
        source: str
        evidence: str | None

        def apply(self, aggregate: Subject) -> None:
            aggregate.attested.add(self.kind)

    class NationalityAttested(Attested):
        citizenships: list[str]
        residencies: list[str]
        kind = "nationality"

    class LocationAttested(Attested):
        country: str
        kind = "location"

    class EmployerAttested(Attested):
        org: str
        kind = "employer"

    class AttestationRevoked(Aggregate.Event):
        kind: str
        effective_at: datetime

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.attested: set[str] = set()

    @classmethod
    def register(cls, subject: str, recorded_at: datetime) -> Subject:
        return cls._create(
            cls.Registered, id=subject_key(subject), timestamp=recorded_at, subject=subject
        )

    def attest(self, attested: type[Attested], recorded_at: datetime, **facts: Any) -> None:
        self.trigger_event(attested, timestamp=recorded_at, **facts)

    def revoke_attestation(self, kind: str, effective_at: datetime, recorded_at: datetime) -> None:
        if kind not in self.attested:
            raise CommandError("kind", f"subject {self.subject} has no {kind} attestation")
        self.trigger_event(
            self.AttestationRevoked, kind=kind, effective_at=effective_at, timestamp=recorded_at
        )


class Directive(Aggregate):
    """A government order or internal policy that denies or reroutes access to models."""

    class Issued(Aggregate.Created):
        directive: str
        authority: str
        reference: str
        received_at: datetime
        effective_at: datetime
        terms: dict[str, Any]
        """The terms in their stored form (see domain.terms): read them as `issued_terms`."""
        signed_by: str | None

        @property
        def issued_terms(self) -> DirectiveTerms:
            return DirectiveTerms.from_stored(self.terms)

        def expiry(self) -> datetime | None:
            """When the directive expires by itself, as issued."""
            return terms_expiry(self.terms)

    class Amended(Aggregate.Event):
        effective_at: datetime
        terms: dict[str, Any]
        """The terms it changes in their stored form (see domain.terms): read them as
        `change`."""
        signed_by: str | None

        @property
        def change(self) -> TermsChange:
            return TermsChange.from_stored(self.terms)

        def expiry(self) -> datetime | None:
            """The expiry it sets; None when it clears it or leaves it as it was."""
            return terms_expiry(self.terms)

        def apply(self, aggregate: Directive) -> None:
            aggregate.amendments.append((self.effective_at, self.change))

    class Lifted(Aggregate.Event):
        effective_at: datetime
        signed_by: str | None

        def apply(self, aggregate: Directive) -> None:
            aggregate.lifted = True

    def __init__(
        self,
        directive: str,
        authority: str,
        reference: str,
        received_at: datetime,
        effective_at: datetime,
        terms: dict[str, Any],
        signed_by: str | None,
    ) -> None:
        self.directive = directive
        self.authority = authority
        self.reference = reference
        self.received_at = received_at
        self.effective_at = effective_at
        self.issued_terms = DirectiveTerms.from_stored(terms)
        self.signed_by = signed_by
        self.amendments: list[tuple[datetime, TermsChange]] = []
        """(effective_at, change) of each amendment, in recorded order."""
        self.lifted = False

    @classmethod
    def issue(
        cls,
        directive: str,
        authority: str,
        reference: str,
        received_at: datetime,
        effective_at: datetime,
        terms: DirectiveTerms,
        signed_by: str | None,
        recorded_at: datetime,
    ) -> Directive:
        return cls._create(
            cls.Issued,
            id=directive_key(directive),
            timestamp=recorded_at,
            directive=directive,
            authority=authority,
            reference=reference,
            received_at=received_at,
            effective_at=effective_at,
            terms=terms.to_stored(),
            signed_by=signed_by,
        )

    def amend(
        self,
        effective_at: datetime,
        change: TermsChange,
        signed_by: str | None,
        recorded_at: datetime,
    ) -> None:
        if self.lifted:
            raise CommandError("directive", f"{self.directive} has been lifted; it cannot change")
        self._check_expiry(effective_at, change)
        for start, in_force in self._terms_from(effective_at, change):
            try:
                check_route(in_force.effect, in_force.route_to)
            except FieldProblem as problem:
                raise CommandError(
                    problem.field, f"{problem} (the directive's terms from {start.isoformat()} "
                    "on, with this amendment)"
                ) from None
        self.trigger_event(
            self.Amended, effective_at=effective_at, terms=change.to_stored(),
            signed_by=signed_by, timestamp=recorded_at,
        )

    def _check_expiry(self, effective_at: datetime, change: TermsChange) -> None:
        """An expiry at or before the terms' start would end the directive without a lift."""
        expires_at = change.expiry()
        if expires_at is None:
            return
        start = max(self.effective_at, effective_at)
        if expires_at <= start:
            raise CommandError(
                "expires_at", f"must be after {start.isoformat()}, when the directive is in "
                "force with this amendment; to end it, lift it"
            )

    def _terms_from(
        self, effective_at: datetime, change: TermsChange
    ) -> list[tuple[datetime, DirectiveTerms]]:
        """The terms in force at each change from `effective_at` on, were the amendment
        (`effective_at`, `change`) added: each amendment replaces what it carries from its
        start, in (start, recorded) order, as the fact base reads them."""
        added = (effective_at, change)
        ordered = sorted([*self.amendments, added], key=lambda amendment: amendment[0])
        in_force = self.issued_terms
        states = []
        reached = False
        for amendment in ordered:
            in_force = amendment[1].applied_to(in_force)
            reached = reached or amendment is added
            if reached:
                states.append((amendment[0], in_force))
        return states

    def lift(self, effective_at: datetime, signed_by: str | None, recorded_at: datetime) -> None:
        if self.lifted:
            raise CommandError("directive", f"{self.directive} is already lifted")
        self.trigger_event(
            self.Lifted, effective_at=effective_at, signed_by=signed_by, timestamp=recorded_at
        )


class CommandReceipt(Aggregate):
    """Marks a `command_id` as applied, in the same transaction as the command's events."""

    class Received(Aggregate.Created):
        command_id: str
        command_type: str
        digest: str | None
        """`domain.commands.command_digest` of the command; None in receipts stored before
        receipts kept it (class version 1)."""

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["digest"] = None

    def __init__(self, command_id: str, command_type: str, digest: str | None) -> None:
        self.command_id = command_id
        self.command_type = command_type
        self.digest = digest

    @classmethod
    def receive(
        cls, command_id: str, command_type: str, digest: str, recorded_at: datetime
    ) -> CommandReceipt:
        return cls._create(
            cls.Received,
            id=receipt_key(command_id),
            timestamp=recorded_at,
            command_id=command_id,
            command_type=command_type,
            digest=digest,
        )

    def is_for(self, command_type: str, digest: str) -> bool:
        """Whether this receipt is for that command, so that applying it again is a no-op.
        A receipt without a digest (stored before receipts kept one) can only tell the command
        type: the same type counts as the same command, as it did when it was stored."""
        if self.digest is None:
            return self.command_type == command_type
        return self.digest == digest
