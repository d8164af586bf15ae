"""Subject facts, interned: a profile shared by every subject whose facts are alike.

A population of a million subjects holds a few hundred distinct fact profiles (one passport
since birth, one employer, a location): what an attestation says, when it holds and what
revoked it are kept once per profile (`Profile`), and each subject keeps only what is its own
(`SubjectRecord`): its name, its profile, the positions its facts were stored at, its evidence
and its personal entitlements. The rule can therefore be judged once per profile for every
subject that has it (`Profile` is the equivalence class the kill switch judges), and a subject
costs a few hundred bytes instead of a few dozen objects.

`SubjectFacts` and `Attestation` are the per-subject form of the same facts, built on demand
for explanations, histories and audits.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from struct import Struct
from typing import Any

_POSITION = Struct("<q")
_position_at = _POSITION.unpack_from


@dataclass(frozen=True, slots=True, eq=False)
class Stated:
    """What one attestation says and when it holds, apart from where it was stored: one
    instance per distinct statement (every US passport since 1990 from `passport-kyc`)."""

    kind: str
    values: dict[str, frozenset[str]]
    """The attributes it gives: citizenship and residency, location, or employer."""
    valid_from: datetime
    valid_until: datetime | None
    source: str
    evidenced: bool
    """Whether the subject's record keeps an evidence reference for it."""
    ahead: bool
    """It starts to hold after it was recorded (so it is not a value fixed since recording)."""

    def expired(self, at: datetime) -> bool:
        return self.valid_until is not None and at >= self.valid_until


@dataclass(frozen=True, slots=True, eq=False)
class Withdrawn:
    """An attestation revocation: the attestations of `kind` stored before it end at
    `effective_at`."""

    kind: str
    effective_at: datetime


@dataclass(frozen=True, slots=True, eq=False)
class Granted:
    """A personal entitlement's terms (its id is the subject's own)."""

    selectors: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime | None


@dataclass(frozen=True, slots=True, eq=False)
class GrantRevoked:
    """The revocation of the subject's `ordinal`-th personal entitlement."""

    ordinal: int
    effective_at: datetime


Fact = Stated | Withdrawn | Granted | GrantRevoked


class Profile:
    """A subject's facts in the order they were stored, without positions, ids and evidence:
    subjects with one profile are decided alike at every valid time, as known now (their
    personal entitlements differ only by id). Interned by `Profiles`."""

    __slots__ = ("facts", "grants", "history", "members", "next", "times", "withdrawals")

    def __init__(self, facts: tuple[Fact, ...]) -> None:
        self.facts = facts
        self.members: set[str] = set()
        """The subjects whose profile this is now (kept by `SubjectRecord`): a class's members
        found without visiting every subject."""
        history: dict[str, list[tuple[Stated, int]]] = {}
        withdrawals: dict[str, list[tuple[datetime, int]]] = {}
        times: list[datetime] = []
        grants = 0
        for index, fact in enumerate(facts):
            if type(fact) is Stated:
                history.setdefault(fact.kind, []).append((fact, index))
                times.append(fact.valid_from)
                if fact.valid_until is not None:
                    times.append(fact.valid_until)
            elif type(fact) is Withdrawn:
                withdrawals.setdefault(fact.kind, []).append((fact.effective_at, index))
                times.append(fact.effective_at)
            elif type(fact) is Granted:
                grants += 1
                times.append(fact.valid_from)
                if fact.valid_until is not None:
                    times.append(fact.valid_until)
            else:
                times.append(fact.effective_at)
        for stated in history.values():
            stated.sort(key=lambda item: (item[0].valid_from, item[1]))
        times.sort()
        self.history = {kind: tuple(stated) for kind, stated in history.items()}
        """Per kind, (statement, index in `facts`) by (valid_from, position): the later one
        supersedes from its start."""
        self.withdrawals = {kind: tuple(ends) for kind, ends in withdrawals.items()}
        self.times = tuple(times)
        """Every valid time at which one of these facts starts or stops holding."""
        self.grants = grants
        self.next: dict[Fact, Profile] = {}
        """The profile this one becomes with one more fact (a memo of `Profiles.adding`)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Profile, (self.facts,))

    def attestation(self, kind: str, at: datetime) -> Stated | None:
        """The statement in force at `at` as known now (see `SubjectFacts.attestation`)."""
        history = self.history.get(kind)
        if not history:
            return None
        for stated, index in reversed(history):
            if stated.valid_from <= at:
                if stated.valid_until is not None and at >= stated.valid_until:
                    return None
                for effective_at, later in self.withdrawals.get(kind, ()):
                    if later > index and effective_at <= at:
                        return None
                return stated
        return None


class Profiles:
    """Interns profiles, so that subjects whose facts are alike share one."""

    def __init__(self) -> None:
        self.empty = Profile(())
        self._known: dict[tuple[Fact, ...], Profile] = {(): self.empty}

    def adding(self, profile: Profile, fact: Fact) -> Profile:
        found = profile.next.get(fact)
        if found is None:
            facts = (*profile.facts, fact)
            found = self._known.get(facts)
            if found is None:
                found = self._known[facts] = Profile(facts)
            profile.next[fact] = found
        return found

    def restricted(self, profile: Profile, kinds: frozenset[str]) -> Profile:
        """The profile with only the attestations (and revocations) of `kinds`, and every
        personal grant: subjects whose profiles agree on the kinds a rule reads are decided
        alike by it."""
        facts = tuple(fact for fact in profile.facts
                      if type(fact) not in (Stated, Withdrawn) or fact.kind in kinds)
        if len(facts) == len(profile.facts):
            return profile
        found = self._known.get(facts)
        if found is None:
            found = self._known[facts] = Profile(facts)
        return found

    def held(self) -> list[Profile]:
        """The profiles some subject has now."""
        return [profile for profile in self._known.values() if profile.members]

    def adopt(self, profile: Profile) -> Profile:
        """The interned profile with `profile`'s facts (after a snapshot is loaded)."""
        return self._known.setdefault(profile.facts, profile)

    def __len__(self) -> int:
        return len(self._known)


class SubjectRecord:
    """One subject: its name and profile, and what is its own: the position each of its facts
    was stored at (the first is when the subject became known), the evidence of its evidenced
    attestations (one string, or a tuple), and its personal entitlements in grant order."""

    __slots__ = ("evidence", "grants", "positions", "profile", "subject")

    def __init__(self, subject: str, profile: Profile, position: int) -> None:
        self.subject = subject
        self.profile = profile
        profile.members.add(subject)
        self.positions = _POSITION.pack(position)
        self.evidence: str | tuple[str, ...] | None = None
        self.grants: tuple[Any, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restored, (self.subject, self.profile, self.positions, self.evidence,
                            self.grants))

    def add(self, profile: Profile, position: int) -> None:
        """The subject's profile with one more fact, stored at `position`."""
        self.profile.members.discard(self.subject)
        profile.members.add(self.subject)
        self.profile = profile
        self.positions += _POSITION.pack(position)

    def position_of(self, index: int) -> int:
        """The position of the profile's `index`-th fact."""
        return _position_at(self.positions, 8 * index + 8)[0]

    @property
    def position(self) -> int:
        """When the subject became known."""
        return _position_at(self.positions, 0)[0]

    @property
    def last_position(self) -> int:
        return _position_at(self.positions, len(self.positions) - 8)[0]

    def attestation(self, kind: str, at: datetime, as_of: int) -> Stated | None:
        """`SubjectFacts.attestation`, read from the profile and this subject's positions."""
        if as_of >= _position_at(self.positions, len(self.positions) - 8)[0]:
            return self.profile.attestation(kind, at)
        history = self.profile.history.get(kind)
        if not history:
            return None
        for stated, index in reversed(history):
            if stated.valid_from <= at and self.position_of(index) <= as_of:
                if stated.valid_until is not None and at >= stated.valid_until:
                    return None
                for effective_at, later in self.profile.withdrawals.get(kind, ()):
                    if later > index and effective_at <= at and self.position_of(later) <= as_of:
                        return None
                return stated
        return None

    def evidences(self) -> list[str]:
        evidence = self.evidence
        if evidence is None:
            return []
        return [evidence] if isinstance(evidence, str) else list(evidence)

    def add_evidence(self, evidence: str) -> None:
        held = self.evidence
        if held is None:
            self.evidence = evidence
        elif isinstance(held, str):
            self.evidence = (held, evidence)
        else:
            self.evidence = (*held, evidence)

    def facts(self, recorded_at: Any) -> SubjectFacts:
        """The subject's facts one object each; `recorded_at(position)` is when the event at
        `position` was recorded."""
        profile = self.profile
        evidence = iter(self.evidences())
        evidences = {index: next(evidence) for index, fact in enumerate(profile.facts)
                     if type(fact) is Stated and fact.evidenced}
        attestations = {
            kind: [
                Attestation(kind, stated.values, stated.valid_from, stated.valid_until,
                            self.position_of(index), recorded_at(self.position_of(index)),
                            stated.source, evidences.get(index))
                for stated, index in history
            ]
            for kind, history in sorted(profile.history.items(), key=_by_first_index)
        }
        revocations = {
            kind: [(effective_at, self.position_of(index)) for effective_at, index in ends]
            for kind, ends in sorted(profile.withdrawals.items(), key=lambda item: item[1][0][1])
        }
        return SubjectFacts(self.subject, self.position, attestations, revocations,
                            list(self.grants), list(profile.times))


def _restored(
    subject: str, profile: Profile, positions: bytes, evidence: str | tuple[str, ...] | None,
    grants: tuple[Any, ...],
) -> SubjectRecord:
    record = SubjectRecord.__new__(SubjectRecord)
    record.subject, record.profile, record.positions = subject, profile, positions
    record.evidence, record.grants = evidence, grants
    profile.members.add(subject)
    return record


def _by_first_index(item: tuple[str, tuple[tuple[Stated, int], ...]]) -> int:
    """Kinds in the order their first attestation arrived (as the fact base met them)."""
    return min(index for _, index in item[1])


@dataclass(slots=True)
class Attestation:
    kind: str
    values: dict[str, frozenset[str]]
    """The attributes it gives: citizenship and residency, location, or employer."""
    valid_from: datetime
    valid_until: datetime | None
    position: int
    recorded_at: datetime
    source: str
    evidence: str | None

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.valid_from, self.position)

    def expired(self, at: datetime) -> bool:
        return self.valid_until is not None and at >= self.valid_until


@dataclass(slots=True)
class SubjectFacts:
    """One subject's facts, one object each (built from its record for whoever reads them)."""

    subject: str
    position: int
    attestations: dict[str, list[Attestation]] = field(default_factory=dict)
    """Per kind, sorted by (valid_from, position): the later one supersedes from its start."""
    revocations: dict[str, list[tuple[datetime, int]]] = field(default_factory=dict)
    entitlements: list[Any] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    """Every valid time at which one of this subject's facts starts or stops holding."""

    def attestation(self, kind: str, at: datetime, as_of: int) -> Attestation | None:
        """The attestation in force, or None when the attribute is unknown at `at`.

        An expired or revoked winner leaves the attribute unknown; it does not revive the
        attestation it superseded.
        """
        candidate = self.latest(kind, at, as_of)
        if candidate is None or candidate.expired(at):
            return None
        if self.revocation(kind, candidate, at, as_of) is not None:
            return None
        return candidate

    def latest(self, kind: str, at: datetime, as_of: int) -> Attestation | None:
        """The attestation that supersedes all others of `kind` valid by `at`, known at
        `as_of`, whether or not it still holds."""
        history = self.attestations.get(kind)
        if not history:
            return None
        for candidate in reversed(history):
            if candidate.valid_from <= at and candidate.position <= as_of:
                return candidate
        return None

    def revocation(
        self, kind: str, attestation: Attestation, at: datetime, as_of: int
    ) -> tuple[datetime, int] | None:
        """(effective_at, position) of a revocation that ends `attestation` by `at`, if any."""
        for effective_at, position in self.revocations.get(kind, ()):
            if attestation.position < position <= as_of and effective_at <= at:
                return effective_at, position
        return None


def around(times: Any, at: datetime) -> tuple[datetime | None, datetime | None]:
    """The times either side of `at` in a sorted sequence."""
    index = bisect_right(times, at)
    return (times[index - 1] if index else None, times[index] if index < len(times) else None)
