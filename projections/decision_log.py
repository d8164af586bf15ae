"""The decision log: every decision a server answered, on the record.

The compliance tools reconstruct what *should* have been decided; an investigation also
asks what *was* served. Each served decision becomes an `Entry` — its decision id, served time,
the request (subject, model, valid time, `known_at`, context), the answer (effect, reasons,
`as_of`) and the replica that answered — and the entries are kept in a table (SQLite or
PostgreSQL, `projections.decision_store`) or on the `interlock.decisions` topic
(`consumers.decision_log`). Every decision carries its `as_of`, so `audit` can re-decide each
one from the event store and name every answer the rule does not give.

**Hash chains.** Each writer (one serving process, from its start) seals its entries into a
chain of its own, named `REPLICA/RUN`, so that replicas never coordinate and a chain never forks:

    digest_n = sha256(canonical entry n)          (every field but digest and link)
    link_n   = projections.chain.chain_link(link_{n-1}, n, entry id, 1, digest_n),
    link_0   = 32 zero bytes

`verify_chain` walks a chain by sequence number and names each entry whose content no longer
matches its digest (edited), whose digest was recomputed with a new link (resealed: the next
entry no longer follows), and each sequence number missing (removed). Entries removed from a
chain's end leave no gap: `audit` prints each chain's head so it can be kept elsewhere, as
`interlock verify` does for the event store.

**Pruning** removes, per chain, the longest prefix of entries served before a cutoff, and keeps
the link of the last removed entry as the chain's new genesis in a *prune record*: an entry of
its own (kind `prune`, its own one-entry chain) holding the cutoff, the count removed and every
chain's genesis so far (cumulative, so the newest prune record is enough). Prune records are not
pruned on SQL logs; on Kafka the newest supersedes the others.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from domain.commands import Identifier, Selector, Timestamp
from domain.decision import Context, Decision, Reason, Verdict, judge
from domain.facts import FactBase, selector_matches
from domain.limits import MAX_ID_CHARS, MAX_LOG_ROWS
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


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


class LogReadError(ValueError):
    """An entry of the log that cannot be read back (damaged or tampered); the message says
    where."""


# --------------------------------------------------------------------------- the entry


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
        return {"cutoff": _iso(self.cutoff), "removed": self.removed,
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
                                "served_at": _iso(self.served_at), "replica": self.replica}
        if self.served is not None:
            s = self.served
            data.update(s.decision.to_json())
            data.update(family=s.family, known_at=_iso(s.known_at), location=s.location,
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


# ------------------------------------------------------------------------ the query


Effect = Literal["allow", "deny", "route"]
ModelFilter = Annotated[Selector, Field(max_length=MAX_ID_CHARS + len("family:"))]


class LogQuery(BaseModel):
    """Which served decisions to list: each filter is optional and they all must hold; served
    time in [from, to). Shared by `decisions query` and `GET /v1/decisions`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Identifier | None = None
    model: ModelFilter | None = Field(
        None, description="A model id, family:NAME or *.")
    effect: Effect | None = None
    from_: Timestamp | None = Field(None, alias="from",
                                    description="Served at or after (with offset).")
    to: Timestamp | None = Field(None, description="Served before (with offset).")
    limit: Annotated[int, Field(ge=1, le=MAX_LOG_ROWS)] = 1000

    @field_validator("to")
    @classmethod
    def _after_from(cls, to: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("from_")
        if to is not None and start is not None and to <= start:
            raise ValueError("must be later than from")
        return to

    def matches(self, entry: Entry) -> bool:
        """Whether an entry passes the filters (the SQL logs filter in SQL, alike)."""
        served = entry.served
        if served is None:
            return False
        d = served.decision
        if self.subject is not None and d.subject != self.subject:
            return False
        if self.model is not None and not selector_matches(self.model, d.model,
                                                           served.family or ""):
            return False
        if self.effect is not None and d.effect != self.effect:
            return False
        if self.from_ is not None and entry.served_us < micros(self.from_):
            return False
        return self.to is None or entry.served_us < micros(self.to)


class LogReader(Protocol):
    """What reading a decision log takes: the SQL tables, or the Kafka topic as read once."""

    def select(self, query: LogQuery) -> Iterator[Entry]:
        """Served decisions passing `query`'s filters (not its limit), by served time."""

    def chain_ranges(self, start: datetime | None, end: datetime | None
                     ) -> dict[str, tuple[int, int]]:
        """Per chain, the first and last sequence number of decisions served in [start, end)."""

    def chain_entries(self, chain: str, low: int, high: int) -> Iterator[Entry]:
        """A chain's entries with sequence numbers in [low, high], in order."""

    def entry_before(self, chain: str, seq: int) -> Entry | None:
        """A chain's last entry before `seq`."""

    def prunes(self) -> list[Entry]:
        """Every prune record kept."""

    def snapshot(self) -> LogReader:
        """The log to read one audit from: itself, or (Kafka) the topic as read once."""


class DecisionLog(LogReader, Protocol):
    """A decision log's store: the SQL tables or the Kafka topic."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Stores entries durably, all or none."""

    def prune(self, cutoff: datetime, replica: str) -> PruneResult:
        """Removes each chain's prefix served before `cutoff` and records it."""

    def close(self) -> None: ...


def query(log: LogReader, asked: LogQuery) -> tuple[list[Entry], bool]:
    """Up to `asked.limit` matching entries, and whether more matched."""
    found: list[Entry] = []
    entries = log.select(asked)
    try:
        for entry in entries:
            if len(found) == asked.limit:
                return found, True
            found.append(entry)
        return found, False
    finally:
        close = getattr(entries, "close", None)
        if close is not None:  # a database cursor: let it go now, not when collected
            close()


@dataclass
class MemoryLog:
    """A decision log held in memory: what the Kafka log reads the topic into (a `LogReader`
    filtering with `LogQuery.matches`), and a test double."""

    entries: list[Entry] = field(default_factory=list)

    def append(self, entries: Sequence[Entry]) -> None:
        self.entries.extend(entries)

    def select(self, asked: LogQuery) -> Iterator[Entry]:
        return iter(sorted((e for e in self.entries if asked.matches(e)),
                           key=lambda e: (e.served_us, e.chain, e.seq)))

    def chain_ranges(self, start: datetime | None, end: datetime | None
                     ) -> dict[str, tuple[int, int]]:
        low = None if start is None else micros(start)
        high = None if end is None else micros(end)
        ranges: dict[str, tuple[int, int]] = {}
        for e in self.entries:
            if e.served is None or (low is not None and e.served_us < low) or (
                    high is not None and e.served_us >= high):
                continue
            first, last = ranges.get(e.chain, (e.seq, e.seq))
            ranges[e.chain] = (min(first, e.seq), max(last, e.seq))
        return ranges

    def chain_entries(self, chain: str, low: int, high: int) -> Iterator[Entry]:
        return iter(sorted((e for e in self.entries
                            if e.chain == chain and low <= e.seq <= high),
                           key=lambda e: e.seq))

    def entry_before(self, chain: str, seq: int) -> Entry | None:
        before = [e for e in self.entries if e.chain == chain and e.seq < seq]
        return max(before, key=lambda e: e.seq) if before else None

    def prunes(self) -> list[Entry]:
        return [e for e in self.entries if e.pruned is not None]

    def snapshot(self) -> MemoryLog:
        return self

    def close(self) -> None:
        return None


# ---------------------------------------------------------------------- verify, audit


@dataclass(frozen=True)
class ChainProblem:
    chain: str
    seq: int
    problem: str
    """`edited` (content differs from its digest), `resealed` (the entry was edited and sealed
    anew: the next one no longer follows), `removed` (sequence numbers missing) or
    `duplicated`."""
    entry_id: str | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"chain": self.chain, "seq": self.seq, "problem": self.problem,
                "decision_id": self.entry_id, "detail": self.detail}


def verify_chain(chain: str, entries: Iterable[Entry], start: Genesis | Entry | None,
                 problems: list[ChainProblem]) -> tuple[int, bytes] | None:
    """Checks one chain's entries (in sequence order) from `start` — its genesis, or the
    stored entry before the first one checked — appending what is wrong to `problems`; returns
    the chain's head (seq, link) reached."""
    seq, link = (0, GENESIS) if start is None else (start.seq, start.link)
    previous: Entry | None = start if isinstance(start, Entry) else None
    head = None
    for entry in entries:
        if entry.seq <= seq:
            if previous is not None and entry.seq == previous.seq:
                problems.append(ChainProblem(chain, entry.seq, "duplicated", entry.entry_id,
                                             "a second entry holds this sequence number"))
            continue
        gap = entry.seq > seq + 1
        if gap:
            missing = (f"seq {seq + 1}" if entry.seq == seq + 2
                       else f"seqs {seq + 1}-{entry.seq - 1}")
            problems.append(ChainProblem(chain, seq + 1, "removed", None,
                                         f"{missing} missing before decision {entry.entry_id}"))
        if digest_of(entry.canonical()) != entry.digest:
            problems.append(ChainProblem(chain, entry.seq, "edited", entry.entry_id,
                                         "the entry's content differs from what was sealed"))
        elif not gap and link_of(link, entry.seq, entry.entry_id, entry.digest) != entry.link:
            culprit = previous.entry_id if previous is not None else None
            problems.append(ChainProblem(
                chain, seq, "resealed", culprit,
                f"decision {entry.entry_id} does not follow from the entry before it: that one "
                "was edited and sealed anew, or replaced"))
        seq, link, previous = entry.seq, entry.link, entry
        head = (seq, link)
    return head


@dataclass(frozen=True)
class Difference:
    """A logged decision the rule does not give at its as_of, valid time and context."""

    entry: Entry
    rule: Verdict | None
    """None when the store has no position `as_of` (it lacks the facts the answer claims)."""
    detail: str

    def to_json(self) -> dict[str, Any]:
        served = self.entry.served
        assert served is not None
        d = served.decision
        rule = None if self.rule is None else Decision.of(
            d.subject, d.model, self.rule, d.at, d.as_of).to_json()
        return {"decision_id": self.entry.entry_id, "served_at": _iso(self.entry.served_at),
                "replica": self.entry.replica, "served": d.to_json(), "rule": rule,
                "detail": self.detail}


@dataclass
class LogAudit:
    position: int
    """The store position the rule was applied with (decisions as_of beyond it differ)."""
    decisions: int = 0
    agreed: int = 0
    failed_closed: int = 0
    """`stale_index` denials: the replica lagged and denied rather than answer from old facts
    (what the rule says at that as_of is not what such an answer claims, so they are counted,
    not compared)."""
    differences: list[Difference] = field(default_factory=list)
    problems: list[ChainProblem] = field(default_factory=list)
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    prunes: list[Entry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "position": self.position, "decisions": self.decisions,
            "agreed": self.agreed, "failed_closed": self.failed_closed,
            "differences": [d.to_json() for d in self.differences],
            "chain_problems": [p.to_json() for p in self.problems],
            "chains": {name: {"seq": seq, "link": link.hex()}
                       for name, (seq, link) in sorted(self.heads.items())},
            "prunes": [{"decision_id": p.entry_id, "pruned_at": _iso(p.served_at),
                        "replica": p.replica, **(p.pruned.to_json() if p.pruned else {})}
                       for p in self.prunes],
        }


STALE_INDEX = (Reason("stale_index"),)


def redecide(facts: FactBase, served: Served) -> Verdict | None:
    """What the rule answers for a logged request at its as_of; None beyond the store."""
    d = served.decision
    if d.as_of > facts.position:
        return None
    return judge(facts, d.subject, d.model, d.at, d.as_of, served.context)


def audit(log: LogReader, facts: FactBase, start: datetime | None = None,
          end: datetime | None = None) -> LogAudit:
    """Verifies the chains of the decisions served in [start, end) (every chain, whole, when
    no window is given) and re-decides each of them from `facts`."""
    log = log.snapshot()
    report = LogAudit(facts.position, prunes=log.prunes())
    genesis = genesis_of(report.prunes)
    for record in report.prunes:
        head = verify_chain(record.chain, [record], None, report.problems)
        if head is not None:
            report.heads[record.chain] = head
    for chain, (low, high) in sorted(log.chain_ranges(start, end).items()):
        anchor: Genesis | Entry | None = genesis.get(chain)
        floor = 0 if anchor is None else anchor.seq
        if start is not None and low - 1 > floor:
            # a window: the chain is checked from the stored entry before it, if any
            before = log.entry_before(chain, low)
            if before is not None and before.seq > floor:
                anchor = before
        entries = log.chain_entries(chain, low, high)
        head = verify_chain(chain, _redeciding(report, facts, entries), anchor, report.problems)
        if head is not None:
            report.heads[chain] = head
    return report


def _redeciding(report: LogAudit, facts: FactBase, entries: Iterable[Entry]
                ) -> Iterator[Entry]:
    for entry in entries:
        served = entry.served
        if served is not None:
            report.decisions += 1
            _compare(report, facts, entry, served)
        yield entry


def _compare(report: LogAudit, facts: FactBase, entry: Entry, served: Served) -> None:
    d = served.decision
    if d.effect == "deny" and d.reasons == STALE_INDEX:
        report.failed_closed += 1
        return
    rule = redecide(facts, served)
    if rule is None:
        report.differences.append(Difference(
            entry, None, f"served as of position {d.as_of}, beyond the store's last position "
            f"{facts.position}: the facts it claims are not in this store"))
    elif rule != d.verdict:
        report.differences.append(Difference(
            entry, rule, f"the rule at position {d.as_of} answers {rule.effect}, "
            f"{d.effect} was served"))
    else:
        report.agreed += 1


# ----------------------------------------------------------------------- retention


@dataclass(frozen=True)
class PruneResult:
    cutoff: datetime
    removed: int
    record: Entry | None
    """The prune record written (None when nothing was removed)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Chains left whole, and why (entries missing: `decisions audit` names them)."""

    def to_json(self) -> dict[str, Any]:
        return {"cutoff": _iso(self.cutoff), "removed": self.removed,
                "record": None if self.record is None else self.record.entry_id,
                "skipped": self.skipped}


_DURATION = re.compile(r"^\s*(\d{1,6})\s*(s|m|h|d|w|y)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 366 * 86_400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `6w` or `5y`; a year counts 366 days, so `5y` never removes
    an entry younger than five calendar years."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"expected a duration like 30d, 12h or 5y, not {text!r}")
    seconds = int(found[1]) * _UNITS[found[2]]
    if seconds == 0:
        raise ValueError("must be longer than zero")
    return timedelta(seconds=seconds)


# ------------------------------------------------------------------------- the writer


Settle = Callable[[list[Any], BaseException | None], None]


class LogWriter:
    """Appends served decisions to a log from one thread, in group commits: whatever arrived
    while the previous commit ran is sealed and stored in the next one.

    `submit` with a token (strict mode) has the writer call `settle(tokens, error)` once per
    commit for the tokens it covered, after the entries are durable (error None) or could not
    be stored; without one (best-effort) nothing waits, at most `capacity` decisions queue, and
    what cannot be queued or stored is counted by `on_dropped(count, reason)`. With `linger`
    the writer waits that long after the first decision arrives before it commits (for
    best-effort, where nobody waits for the commit)."""

    MAX_COMMIT = 20_000
    """Decisions per commit at most, whole submissions (a batch request is never split)."""

    def __init__(self, log: DecisionLog, chain: Chain, family_of: Callable[[str], str | None],
                 capacity: int, settle: Settle | None = None,
                 on_written: Callable[[int], None] | None = None,
                 on_dropped: Callable[[int, str], None] | None = None,
                 linger: float = 0.0) -> None:
        self.log = log
        self._linger = linger
        self.chain = chain
        self._family_of = family_of
        self._capacity = capacity
        self._settle = settle
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._queue: deque[tuple[Sequence[Pending], Any]] = deque()
        self._queued = 0
        self._ready = threading.Condition()
        self._waiting = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def submit(self, pending: Sequence[Pending], token: Any = None) -> bool:
        """Queues decisions; False (and counted as dropped) when the queue is full or the
        writer has stopped."""
        if not pending:
            raise ValueError("nothing to log")
        with self._ready:
            if self._stopping or (token is None and self._queued + len(pending)
                                  > self._capacity):
                full = not self._stopping
                accepted = False
            else:
                self._queue.append((pending, token))
                self._queued += len(pending)
                if self._waiting:
                    self._ready.notify()
                accepted = True
        if not accepted and self._on_dropped is not None:
            self._on_dropped(len(pending), "queue_full" if full else "stopped")
        return accepted

    def _take(self) -> list[tuple[Sequence[Pending], Any]] | None:
        with self._ready:
            while not self._queue:
                if self._stopping:
                    return None
                self._waiting = True
                self._ready.wait()
                self._waiting = False
            if self._linger:  # let more arrive: fewer, larger commits, fewer GIL handovers
                deadline = time.monotonic() + self._linger
                while (not self._stopping and self._queued < self.MAX_COMMIT
                       and (left := deadline - time.monotonic()) > 0):
                    self._ready.wait(left)
            taken = []
            count = 0
            while self._queue and (not taken or count + len(self._queue[0][0])
                                   <= self.MAX_COMMIT):
                item = self._queue.popleft()
                taken.append(item)
                count += len(item[0])
            self._queued -= count
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            pending = [p for batch, _ in taken for p in batch]
            tokens = [token for _, token in taken if token is not None]
            error: BaseException | None = None
            try:
                entries = self.chain.seal(pending, self._family_of)
                self.log.append(entries)
                self.chain.advance(entries[-1])
            except Exception as failure:  # the log's store failed: settle, count, go on
                error = failure
            if tokens and self._settle is not None:
                self._settle(tokens, error)
            if error is None:
                if self._on_written is not None:
                    self._on_written(len(pending))
            elif self._on_dropped is not None:
                unsettled = sum(len(batch) for batch, token in taken if token is None)
                if unsettled:
                    self._on_dropped(unsettled, "write_failed")

    def close(self, timeout: float = 10.0) -> None:
        """Stores what is queued, then stops the thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join(timeout)


# ----------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Exposure:
    """Allows served for (subject, model) pairs an order cut off, at valid times it was in
    force, by replicas that had not applied it yet (`as_of` before its position): what the
    order's exposure window really let through."""

    allows: int
    subjects: int
    by_model: dict[str, int]
    first: datetime | None
    last: datetime | None
    after_enforcement: int
    """Allows for those pairs as of the order's position or later: access given back by facts
    recorded since (a passport, a licence), which `decisions audit` re-proves."""
    served: int
    """Decisions for those pairs served at valid times the order was in force."""

    def to_json(self) -> dict[str, Any]:
        return {"allows": self.allows, "subjects": self.subjects, "by_model": self.by_model,
                "first": _iso(self.first), "last": _iso(self.last),
                "after_enforcement": self.after_enforcement, "served": self.served}


def exposure(log: LogReader, pairs: set[tuple[str, str]], effective_at: datetime,
             position: int) -> Exposure:
    """The order's exposure from the log: `pairs` are the (subject, model) decisions it changed,
    `position` where it was stored."""
    allows = Counter[str]()
    subjects: set[str] = set()
    first = last = None
    after = served = 0
    for entry in log.select(LogQuery.model_validate({"from": effective_at})):
        assert entry.served is not None
        d = entry.served.decision
        if (d.subject, d.model) not in pairs or d.at < effective_at:
            continue
        served += 1
        if d.effect != "allow":
            continue
        if d.as_of >= position:
            after += 1
            continue
        allows[d.model] += 1
        subjects.add(d.subject)
        moment = entry.served_at
        first = moment if first is None or moment < first else first
        last = moment if last is None or moment > last else last
    return Exposure(sum(allows.values()), len(subjects), dict(sorted(allows.items())), first,
                    last, after, served)
