"""The decision log's entry: a served decision or a prune record, sealed into its writer's hash
chain (see the package docstring for the chain and pruning)."""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from domain.decision import Context, Decision, Reason, utc_iso
from projections.chain import GENESIS, chain_link

KIND_DECISION = "decision"
KIND_PRUNE = "prune"
LINK_VERSION = 1
"""The `version` argument of `chain_link`: entries are written once, never revised."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch: exact, so a stored time reproduces its digest."""
    return (moment - _EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class LogReadError(ValueError):
    """An entry of the log that cannot be read back (damaged or tampered); the message says
    where."""



@dataclass(frozen=True, slots=True)
class Served:
    """The decision part of an entry: the answer as served and what the request added to it."""

    decision: Decision
    family: str | None
    """The model's family when it was served (None for an unknown model): `family:NAME`
    filters need it without the event store."""
    known_at: datetime | None
    location: str | None
    purpose: str | None

    @property
    def context(self) -> Context:
        return Context(self.location, self.purpose)

    def canonical(self) -> list[Any]:
        d = self.decision
        return [d.subject, d.model, self.family, micros(d.at),
                None if self.known_at is None else micros(self.known_at), self.location,
                self.purpose, d.effect, d.route_to, d.disclosed, reason_pairs(d.reasons),
                d.as_of]


_PAIRS: dict[tuple[Reason, ...], list[list[str | None]]] = {}


def reason_pairs(reasons: tuple[Reason, ...]) -> list[list[str | None]]:
    """`[[code, ref], ...]`, built once per distinct reasons (decisions share few of them)."""
    found = _PAIRS.get(reasons)
    if found is None:
        if len(_PAIRS) >= 10_000:
            _PAIRS.clear()
        found = _PAIRS[reasons] = [[r.code, r.ref] for r in reasons]
    return found


class Genesis(NamedTuple):
    """Where a pruned chain now starts: the sequence number and link of its last removed
    entry."""

    chain: str
    seq: int
    link: bytes


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune record says: entries served before `cutoff` were removed."""

    cutoff: datetime
    removed: int
    genesis: tuple[Genesis, ...]
    """Every pruned chain's genesis up to this prune, this one's included."""

    def canonical(self) -> list[Any]:
        return [micros(self.cutoff), self.removed,
                [[g.chain, g.seq, g.link.hex()] for g in self.genesis]]

    def to_json(self) -> dict[str, Any]:
        return {"cutoff": utc_iso(self.cutoff), "removed": self.removed,
                "genesis": [{"chain": g.chain, "seq": g.seq, "link": g.link.hex()}
                            for g in self.genesis]}


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: a served decision or a prune record, sealed into its chain."""

    entry_id: str
    """The decision id (a UUID) the response carried, or the prune record's id."""
    served_us: int
    """When it was served (or pruned), in microseconds since the epoch."""
    replica: str
    chain: str
    seq: int
    served: Served | None
    pruned: Pruned | None
    digest: bytes
    link: bytes

    @property
    def kind(self) -> str:
        return KIND_DECISION if self.served is not None else KIND_PRUNE

    @property
    def served_at(self) -> datetime:
        return from_micros(self.served_us)

    def canonical(self) -> bytes:
        """The bytes the digest covers: every field but the digest and the link."""
        return canonical_bytes(self.entry_id, self.served_us, self.replica, self.chain,
                               self.seq, self.served, self.pruned)

    def to_json(self) -> dict[str, Any]:
        """The entry as `decisions query --json` and `GET /v1/decisions` give it: the normative
        decision JSON with the decision id, plus what the log adds."""
        data: dict[str, Any] = {"decision_id": self.entry_id, "kind": self.kind,
                                "served_at": utc_iso(self.served_at), "replica": self.replica}
        if self.served is not None:
            s = self.served
            data.update(s.decision.to_json())
            data.update(family=s.family, known_at=utc_iso(s.known_at), location=s.location,
                        purpose=s.purpose)
        if self.pruned is not None:
            data["prune"] = self.pruned.to_json()
        data.update(chain=self.chain, seq=self.seq, link=self.link.hex())
        return data


def canonical_bytes(entry_id: str, served_us: int, replica: str, chain: str, seq: int,
                    served: Served | None, pruned: Pruned | None) -> bytes:
    kind = KIND_DECISION if served is not None else KIND_PRUNE
    return orjson.dumps([kind, entry_id, served_us, replica, chain, seq,
                         None if served is None else served.canonical(),
                         None if pruned is None else pruned.canonical()])


def digest_of(canonical: bytes) -> bytes:
    return hashlib.sha256(canonical).digest()


def link_of(previous: bytes, seq: int, entry_id: str, digest: bytes) -> bytes:
    """The event store's link function, over an entry's place in its chain, id and digest."""
    return chain_link(previous, seq, entry_id, LINK_VERSION, digest)


Pending = tuple[str, int, Decision, datetime | None, str | None, str | None]
"""A served decision not yet sealed: (decision id, served µs, decision, known_at, location,
purpose). Built on the request path, sealed by the log's writer thread."""


class DecisionIds:
    """Decision ids without a system call each: RFC 9562 version 8 UUIDs made of 74 random bits
    drawn once per process and a 48-bit counter, unique without coordination."""

    def __init__(self) -> None:
        bits = secrets.randbits(60)
        variant = 0x8000 | secrets.randbits(14)  # 10xx: the RFC's variant
        self._prefix = (f"{bits >> 28:08x}-{(bits >> 12) & 0xFFFF:04x}-"
                        f"{0x8000 | (bits & 0xFFF):04x}-{variant:04x}-")
        self._counter = itertools.count()  # next() on it is atomic: no lock

    def take(self, count: int = 1) -> list[str]:
        prefix, counter = self._prefix, self._counter
        return [f"{prefix}{next(counter) & 0xFFFF_FFFF_FFFF:012x}" for _ in range(count)]


class Chain:
    """One writer's hash chain: its name, the last sequence number and link sealed."""

    def __init__(self, replica: str, name: str | None = None) -> None:
        self.replica = replica
        self.name = name or f"{replica}/{secrets.token_hex(4)}"
        self.seq = 0
        self.link = GENESIS

    def seal(self, pending: Sequence[Pending], family_of: Callable[[str], str | None]
             ) -> list[Entry]:
        """Entries for `pending` following the chain's head; `advance` once they are stored."""
        sealed = []
        seq, link = self.seq, self.link
        replica, name = self.replica, self.name
        for entry_id, served_us, decision, known_at, location, purpose in pending:
            seq += 1
            served = Served(decision, family_of(decision.model), known_at, location, purpose)
            digest = digest_of(canonical_bytes(entry_id, served_us, replica, name, seq, served,
                                               None))
            link = link_of(link, seq, entry_id, digest)
            sealed.append(Entry(entry_id, served_us, replica, name, seq, served, None, digest,
                                link))
        return sealed

    def advance(self, last: Entry) -> None:
        self.seq, self.link = last.seq, last.link


def prune_record(replica: str, pruned_us: int, pruned: Pruned) -> Entry:
    """A prune record: the single entry of a chain of its own."""
    chain = Chain(replica)
    entry_id = DecisionIds().take()[0]
    digest = digest_of(canonical_bytes(entry_id, pruned_us, replica, chain.name, 1, None,
                                       pruned))
    return Entry(entry_id, pruned_us, replica, chain.name, 1, None, pruned, digest,
                 link_of(GENESIS, 1, entry_id, digest))


def genesis_of(prunes: Iterable[Entry]) -> dict[str, Genesis]:
    """Each pruned chain's genesis: the furthest any prune record reached."""
    found: dict[str, Genesis] = {}
    for record in prunes:
        if record.pruned is None:
            continue
        for g in record.pruned.genesis:
            if g.chain not in found or g.seq > found[g.chain].seq:
                found[g.chain] = g
    return found


def merged_genesis(earlier: dict[str, Genesis], now: Iterable[Genesis]) -> tuple[Genesis, ...]:
    """The cumulative genesis list a new prune record carries."""
    merged = dict(earlier)
    for g in now:
        if g.chain not in merged or g.seq > merged[g.chain].seq:
            merged[g.chain] = g
    return tuple(merged[name] for name in sorted(merged))
