"""The application: the only way to change facts.

Commands go in, events come out and are stored by the eventsourcing event store, whose
notification id is Interlock's global position. Storage is chosen by the environment the
application is given (see `interlock.config`); nothing here knows which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import ProcessRecorder, Tracking

from domain.aggregates import (
    CommandReceipt,
    Directive,
    Entitlement,
    ModelVersion,
    Subject,
    directive_key,
    entitlement_key,
    model_key,
    receipt_key,
    subject_key,
)
from domain.commands import (
    AmendDirective,
    AttestEmployer,
    AttestLocation,
    AttestNationality,
    Command,
    CommandConflict,
    CommandError,
    GrantEntitlement,
    IssueDirective,
    LiftDirective,
    RegisterModel,
    ReinstateModel,
    RevokeAttestation,
    RevokeEntitlement,
    WithdrawModel,
    command_digest,
)
from domain.values import shown

Clock = Callable[[], datetime]

SignatureCheck = Callable[[Command], str | None]
"""Vets a directive command's signature: returns the signer's key id (None when signatures are
not required), or raises CommandError naming `signature`. Key material lives outside the domain."""


def system_clock() -> datetime:
    return datetime.now(UTC)


@runtime_checkable
class WriteLocking(Protocol):
    """A recorder that can hold the store's write lock across a unit of work, in the one
    transaction its writes then join (the SQLite and PostgreSQL recorders of the shell)."""

    def write_lock(self) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class Applied:
    """How many commands a batch applied, how many it skipped as repeats of an applied
    `command_id`, and the store position after it."""

    applied: int
    position: int
    repeated: int = 0


class Interlock(Application[UUID]):
    """Applies commands to the aggregates and stores the resulting events."""

    name = "interlock"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Clock = system_clock,
        check_signature: SignatureCheck | None = None,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self.check_signature = check_signature

    recorder: ProcessRecorder

    def construct_recorder(self) -> ProcessRecorder:
        """A process recorder, so that input consumed from elsewhere (Kafka offsets) can be
        tracked in the same transaction as the events it caused."""
        return self.factory.process_recorder()

    @property
    def position(self) -> int:
        """The position of the last stored event, 0 for an empty store."""
        return self.recorder.max_notification_id() or 0

    def last_recorded_at(self) -> datetime | None:
        """The recorded time of the last stored event (None for an empty store)."""
        last = self.position
        found = self.recorder.select_notifications(start=last, limit=1) if last else []
        return self.mapper.to_domain_event(found[0]).timestamp if found else None

    def apply(self, command: Command) -> Applied:
        """Applies one command in its own transaction."""
        with self.batch() as batch:
            batch.apply(command)
        return batch.result

    def apply_all(self, commands: Iterable[Command]) -> Applied:
        """Applies commands in order; the first refused one raises and nothing of it is stored,
        while every command before it is."""
        with self.batch() as batch:
            for command in commands:
                batch.apply(command)
        return batch.result

    @contextmanager
    def batch(self, flush_every: int = 1000) -> Iterator[CommandBatch]:
        """A unit of work that stores many commands in few transactions, in command order."""
        batch = CommandBatch(self, flush_every)
        try:
            yield batch
        finally:
            batch.flush()


class CommandBatch:
    """Applies commands against a shared working set of aggregates, then stores their events.

    A command either triggers all of its events or, refused, none of them; the events of the
    commands before it are kept either way.

    Each transaction (up to `flush_every` commands) holds the store's write lock from before
    its first command reads an aggregate or the clock until its commit: recorded times are
    stamped under the lock, so they increase with position and no event is committed after the
    time it is recorded at; and no other writer can store an event on an aggregate between
    this batch's read of it and its write (the second writer waits, then reads afresh).
    """

    def __init__(self, app: Interlock, flush_every: int) -> None:
        self._app = app
        self._flush_every = flush_every
        self._working: dict[UUID, Aggregate | None] = {}
        self._events: list[Any] = []
        self._tracking: Tracking | None = None
        self._pending_commands = 0
        self._applied = 0
        self._repeated = 0
        self._position = app.position
        self._lock: ExitStack | None = None
        self._last_recorded: datetime | None = None

    @property
    def result(self) -> Applied:
        return Applied(self._applied, self._position, self._repeated)

    def apply(self, command: Command) -> bool:
        """Applies one command; False when its `command_id` was applied before with this same
        command. CommandConflict when that id was applied with a different one."""
        self._hold_write_lock()
        digest = None if command.command_id is None else command_digest(command)
        if digest is not None and self._repeats(command, digest):
            self._repeated += 1
            return False
        now = self._stamp()
        changed = _HANDLERS[type(command)](self, command, now)
        if digest is not None:
            receipt = CommandReceipt.receive(command.command_id, command.type, digest, now)
            self._working[receipt.id] = receipt
            changed = [*changed, receipt]
        for aggregate in changed:
            self._events.extend(aggregate.collect_events())
        self._applied += 1
        self._pending_commands += 1
        if self._pending_commands >= self._flush_every:
            self.flush()
        return True

    def _repeats(self, command: Command, digest: str) -> bool:
        """Whether the command's `command_id` has a receipt for this same command; raises
        CommandConflict when the receipt is for another command."""
        receipt: CommandReceipt | None = self._get(receipt_key(command.command_id))
        if receipt is None:
            return False
        if not receipt.is_for(command.type, digest):
            raise CommandConflict(
                "command_id", f"{shown(command.command_id, 80)} was already applied with a "
                f"different {receipt.command_type} command; a command_id names one command"
            )
        return True

    def track(self, tracking: Tracking) -> None:
        """Records, with the next stored events, how far an input source has been consumed:
        the input and its effects are then stored together or not at all."""
        self._tracking = tracking

    def flush(self) -> None:
        """Stores the pending events and tracking in the held transaction and commits it."""
        events, tracking, lock = self._events, self._tracking, self._lock or ExitStack()
        self._events, self._tracking, self._lock = [], None, None
        self._pending_commands = 0
        with lock:
            recordings = (self._app.events.put(events, tracking=tracking)
                          if events or tracking is not None else [])
        if recordings:
            self._position = recordings[-1].notification.id

    def discard(self) -> None:
        """Drops the pending events and tracking and releases the write lock: nothing of them
        is stored. For a caller stopped half-way (a crash it survives in-process), so that the
        lock does not outlive the batch; the held transaction has written nothing yet."""
        lock, self._lock = self._lock, None
        self._events, self._tracking, self._pending_commands = [], None, 0
        self._working.clear()
        if lock is not None:
            lock.close()

    def _hold_write_lock(self) -> None:
        """Takes the store's write lock for the next transaction, before its first read; the
        working set is read afresh under it (another writer may have changed it since)."""
        if self._lock is not None:
            return
        lock = ExitStack()
        recorder = self._app.recorder
        if isinstance(recorder, WriteLocking):
            lock.enter_context(recorder.write_lock())
        self._lock = lock
        self._working.clear()
        self._last_recorded = self._app.last_recorded_at()

    def _stamp(self) -> datetime:
        """The recorded time of the next command: the clock, but never before the last stored
        event's (a clock stepped back, or another writer's clock ahead)."""
        now = self._app.clock()
        if self._last_recorded is not None and now < self._last_recorded:
            now = self._last_recorded
        self._last_recorded = now
        return now

    def _get(self, key: UUID) -> Any:
        if key not in self._working:
            try:
                self._working[key] = self._app.repository.get(key)
            except AggregateNotFoundError:
                self._working[key] = None
        return self._working[key]

    def _add(self, aggregate: Aggregate) -> Aggregate:
        self._working[aggregate.id] = aggregate
        return aggregate

    def _existing(self, key: UUID, field: str, what: str) -> Any:
        aggregate = self._get(key)
        if aggregate is None:
            raise CommandError(field, f"unknown {what}")
        return aggregate

    @staticmethod
    def _valid_from(given: datetime | None, until: datetime | None, now: datetime) -> datetime:
        """An omitted valid_from is the recorded time; the interval must still be non-empty."""
        if given is None and until is not None and until <= now:
            raise CommandError("valid_until", "must be after valid_from (the recorded time)")
        return given or now

    def _signer(self, command: Command) -> str | None:
        check = self._app.check_signature
        return None if check is None else check(command)

    def _require_models(self, field: str, selectors: Iterable[str]) -> None:
        for selector in selectors:
            if selector != "*" and not selector.startswith("family:"):
                self._existing(model_key(selector), field, f"model {selector!r} (not registered)")

    def _register_model(self, c: RegisterModel, now: datetime) -> list[Aggregate]:
        if self._get(model_key(c.model)) is not None:
            raise CommandError("model", f"{c.model} is already registered")
        return [self._add(ModelVersion.register(c.model, c.family, now))]

    def _withdraw_model(self, c: WithdrawModel, now: datetime) -> list[Aggregate]:
        model = self._existing(model_key(c.model), "model", f"model {c.model!r}")
        model.withdraw(c.effective_at or now, now)
        return [model]

    def _reinstate_model(self, c: ReinstateModel, now: datetime) -> list[Aggregate]:
        model = self._existing(model_key(c.model), "model", f"model {c.model!r}")
        model.reinstate(c.effective_at or now, now)
        return [model]

    def _grant_entitlement(self, c: GrantEntitlement, now: datetime) -> list[Aggregate]:
        if self._get(entitlement_key(c.entitlement)) is not None:
            raise CommandError("entitlement", f"{c.entitlement} already exists")
        self._require_models("models", c.models)
        kind, grantee = ("subject", c.grantee.subject) if c.grantee.subject else (
            "org", c.grantee.org
        )
        entitlement = Entitlement.grant(
            c.entitlement, kind, grantee, list(c.models),
            self._valid_from(c.valid_from, c.valid_until, now), c.valid_until, now,
        )
        return [self._add(entitlement)]

    def _revoke_entitlement(self, c: RevokeEntitlement, now: datetime) -> list[Aggregate]:
        entitlement = self._existing(
            entitlement_key(c.entitlement), "entitlement", f"entitlement {c.entitlement!r}"
        )
        entitlement.revoke(c.effective_at or now, now)
        return [entitlement]

    def _subject(self, subject_id: str, now: datetime) -> Subject:
        subject = self._get(subject_key(subject_id))
        if subject is None:
            subject = self._add(Subject.register(subject_id, now))
        return subject

    def _attest(
        self, c: AttestNationality | AttestLocation | AttestEmployer, now: datetime
    ) -> list[Aggregate]:
        valid_from = self._valid_from(c.valid_from, c.valid_until, now)
        subject = self._subject(c.subject, now)
        attested, facts = _attested(c)
        subject.attest(
            attested, now, valid_from=valid_from, valid_until=c.valid_until, source=c.source,
            evidence=c.evidence, **facts,
        )
        return [subject]

    def _revoke_attestation(self, c: RevokeAttestation, now: datetime) -> list[Aggregate]:
        subject = self._existing(subject_key(c.subject), "subject", f"subject {c.subject!r}")
        subject.revoke_attestation(c.kind, c.effective_at or now, now)
        return [subject]

    def _issue_directive(self, c: IssueDirective, now: datetime) -> list[Aggregate]:
        if self._get(directive_key(c.directive)) is not None:
            raise CommandError("directive", f"{c.directive} already exists")
        self._require_models("models", c.models)
        if c.route_to is not None:
            self._require_models("route_to", [c.route_to])
        signed_by = self._signer(c)
        received_at = c.received_at or now
        directive = Directive.issue(
            c.directive, c.authority, c.reference, received_at, c.effective_at or received_at,
            c.terms(), signed_by, now,
        )
        return [self._add(directive)]

    def _amend_directive(self, c: AmendDirective, now: datetime) -> list[Aggregate]:
        directive = self._existing(
            directive_key(c.directive), "directive", f"directive {c.directive!r}"
        )
        if c.models is not None:
            self._require_models("models", c.models)
        if c.route_to is not None:
            self._require_models("route_to", [c.route_to])
        directive.amend(c.effective_at or now, c.change(), self._signer(c), now)
        return [directive]

    def _lift_directive(self, c: LiftDirective, now: datetime) -> list[Aggregate]:
        directive = self._existing(
            directive_key(c.directive), "directive", f"directive {c.directive!r}"
        )
        directive.lift(c.effective_at or now, self._signer(c), now)
        return [directive]


def _attested(
    c: AttestNationality | AttestLocation | AttestEmployer,
) -> tuple[type[Subject.Attested], dict[str, Any]]:
    """The event an attestation command becomes, and the facts particular to its kind."""
    if isinstance(c, AttestNationality):
        return Subject.NationalityAttested, {
            "citizenships": sorted(set(c.citizenships)),
            "residencies": sorted(set(c.residencies)),
        }
    if isinstance(c, AttestLocation):
        return Subject.LocationAttested, {"country": c.country}
    return Subject.EmployerAttested, {"org": c.org}


_HANDLERS: dict[type, Callable[[CommandBatch, Any, datetime], list[Aggregate]]] = {
    RegisterModel: CommandBatch._register_model,
    WithdrawModel: CommandBatch._withdraw_model,
    ReinstateModel: CommandBatch._reinstate_model,
    GrantEntitlement: CommandBatch._grant_entitlement,
    RevokeEntitlement: CommandBatch._revoke_entitlement,
    AttestNationality: CommandBatch._attest,
    AttestLocation: CommandBatch._attest,
    AttestEmployer: CommandBatch._attest,
    RevokeAttestation: CommandBatch._revoke_attestation,
    IssueDirective: CommandBatch._issue_directive,
    AmendDirective: CommandBatch._amend_directive,
    LiftDirective: CommandBatch._lift_directive,
}
