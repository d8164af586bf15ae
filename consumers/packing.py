"""Packed enforcement records: what `interlock.enforcement` and the enforcement stream carry.

The kill switch hands its changes as `projections.enforcement.ChangeGroup`s (one cause, one
model, one verdict, many subjects). On the wire each group becomes `access_revoked` /
`access_restored` records (schema v2 / v4) that list their subjects: the group is split by the
partition each subject would go to if the record were keyed by subject (kafka-python's
DefaultPartitioner: murmur2 of the subject's UTF-8 bytes, modulo the partition count), then
by MAX_ENFORCEMENT_RECORD_BYTES. A subject's changes therefore stay in one partition, in
order, exactly as when there was one record per (subject, model), and a consumer group of
gateways splits the work by partition.

Each cause's records end, in every partition the writing shard owns, with one
`enforcement_completed` record counting the records of that cause before it in that partition.
Why per partition, not one per cause: Kafka orders records within a partition only, so a
completion can vouch only for what precedes it in its own partition, and a gateway in a
consumer group reads only its partitions; each partition has exactly one writer (the shard
owning it), which counts what it wrote there without asking anyone. A reader that wants the
whole cause waits for the completion of every partition (bench/killswitch.py does). Causes
that get completions: every event or moment that changed access in the shard's partitions,
and every directive event (an order) even when it changed nothing there, so that whoever
waits on an order always hears that it is done.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate, chain, repeat
from typing import Any

from domain.decision import reasons_json
from domain.limits import MAX_ENFORCEMENT_RECORD_BYTES
from projections.enforcement import ChangeGroup, citing
from schemas.codec import encode

ENFORCEMENT_PARTITIONS = 3
"""Partitions `interlock.enforcement` is created with; the embedded stream packs as if for it."""
COMPLETED = "enforcement_completed"
_AT_BYTES = 10
"""Avro bytes of one `ats` entry at most (a long, zigzag varint)."""
_SUBJECT_OVERHEAD = 3
"""Avro bytes around one listed subject beyond its UTF-8 bytes (its length, as a varint, is at
most 2 bytes for an id of MAX_ID_CHARS), with a byte to spare for the array's block count."""


class Partitioner:
    """The partition of `interlock.enforcement` a record keyed by the subject would go to.

    kafka-python's murmur2 is pure Python (about 4 µs a key), so each subject's partition is
    remembered once computed: as one set of subjects per partition, which `split` filters an
    order's subjects through at C speed."""

    def __init__(self, partitions: int) -> None:
        from kafka.partitioner import murmur2  # the Kafka client only where records are packed

        self.partitions = partitions
        self._murmur2 = murmur2
        self._members: list[set[str]] = [set() for _ in range(partitions)]

    def __call__(self, subject: str) -> int:
        for partition, members in enumerate(self._members):
            if subject in members:
                return partition
        partition = (self._murmur2(subject.encode()) & 0x7FFFFFFF) % self.partitions
        self._members[partition].add(subject)
        return partition

    def split(self, subjects: Collection[str]) -> list[tuple[int, list[str]]]:
        """(partition, its subjects) for each partition some of `subjects` go to, by
        partition; each partition's subjects in no particular order (a subject is listed once
        in a group: their order carries nothing)."""
        if len(subjects) == 1:  # one subject (an allow citing its own entitlement)
            (subject,) = subjects
            return [(self(subject), [subject])]
        among = subjects if isinstance(subjects, set | frozenset) else set(subjects)
        parts = [members & among for members in self._members]
        if sum(map(len, parts)) < len(among):
            self.learn(among)
            parts = [members & among for members in self._members]
        return [(partition, list(found)) for partition, found in enumerate(parts) if found]

    def learn(self, subjects: Iterable[str]) -> None:
        """Computes ahead the partitions of `subjects` (a population, before the first order)."""
        for subject in set(subjects).difference(*self._members):
            self(subject)


@dataclass(frozen=True, slots=True)
class EnforcementRecord:
    """One record of `interlock.enforcement`: its Avro record name, partition and body."""

    name: str
    partition: int
    record: dict[str, Any]

    @property
    def changes(self) -> int:
        """The (subject, model) changes it carries: none for a completion."""
        return len(self.record.get("subjects", ()))

    def headers(self) -> list[tuple[str, bytes]]:
        return [("type", self.name.encode()), ("position", b"%d" % self.record["position"])]

    def encode(self) -> bytes:
        return encode(self.name, self.record)

    def to_json(self) -> dict[str, Any]:
        """The record as the enforcement stream sends it: its fields, timestamps in ISO-8601,
        and `type`, its record name."""
        return {"type": self.name, **{
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in self.record.items()
        }}


@dataclass(frozen=True, slots=True)
class Cause:
    """What a completion closes: an applied event (`moment` None) or a moment that came."""

    position: int
    recorded_at: datetime
    moment: datetime | None = None


class Packer:
    """Packs one shard's change groups into records of its partitions, and closes each cause.

    `owned`: the partitions this shard writes to (every partition for a single enforcer); the
    groups it is given hold only subjects of those partitions (`Enforcer(owns=...)`)."""

    def __init__(self, partitioner: Partitioner, owned: Iterable[int] | None = None,
                 shard: int = 0, shards: int = 1,
                 limit: int = MAX_ENFORCEMENT_RECORD_BYTES) -> None:
        self.partitioner = partitioner
        self.owned = tuple(sorted(range(partitioner.partitions) if owned is None else owned))
        self.shard, self.shards, self.limit = shard, shards, limit

    def records(self, groups: Iterable[ChangeGroup]) -> list[EnforcementRecord]:
        """The packed records of `groups`, in order: groups that differ only in `at` share
        records (each subject's `at` in `ats`), then by partition, then by size."""
        packed: list[EnforcementRecord] = []
        for group, subjects, ats, cites in _merged(groups):
            at_of = None if ats is None else dict(zip(subjects, ats, strict=True))
            cite_of = None if cites is None else dict(zip(subjects, cites, strict=True))
            base = None
            for partition, mine in self.partitioner.split(subjects):
                times = [] if at_of is None else list(map(at_of.__getitem__, mine))
                theirs = [] if cite_of is None else list(map(cite_of.__getitem__, mine))
                cuts: Iterable[tuple[int, int]] = ((0, 1),)  # one subject: one record
                if len(mine) > 1:
                    if base is None:
                        base = len(encode(group.kind, _record(group, [""], [], group.at, [])))
                    cuts = self._chunks(mine, base, at_of is not None, theirs)
                for start, end in cuts:
                    chunk = times[start:end]
                    at = chunk[0] if chunk else group.at
                    if len(set(chunk)) <= 1:  # one valid time for all: `at` says it
                        chunk = []
                    packed.append(EnforcementRecord(group.kind, partition, _record(
                        group, mine[start:end], chunk, at, theirs[start:end])))
        return packed

    def _chunks(self, subjects: list[str], base: int, mixed: bool, cites: list[str]
                ) -> Iterable[tuple[int, int]]:
        """Where to cut `subjects` so that each record stays within the bound (its first
        subject is written twice: as `subject` too; with `mixed`, each has its `at` too; with
        `cites`, its entitlement too, the first one twice: in `reasons` too): as many as fit
        in each (ids of one length and ASCII, as a population's usually are, counted at once;
        others by bisecting the running total of their sizes)."""
        overhead = _SUBJECT_OVERHEAD + (_AT_BYTES if mixed else 0)
        if cites:
            overhead += _SUBJECT_OVERHEAD
            base += len(max(cites, key=len).encode())
            subjects = [subject + cited for subject, cited in zip(subjects, cites, strict=True)]
        count = len(subjects)
        joined = "".join(subjects)
        if base + overhead * (count + 1) + len(joined) <= self.limit:  # may fit in one
            total = len(joined.encode()) + overhead * count
            if base + len(subjects[0].encode()) + overhead + total <= self.limit:
                yield 0, count  # the usual case: one record
                return
        ascii = joined.isascii()
        widest = max(map(len, subjects))
        if ascii and len(joined) == widest * count:  # every id `widest` bytes
            cost = widest + overhead
            fit = max(1, (self.limit - base - cost) // cost)
            for start in range(0, count, fit):
                yield start, min(start + fit, count)
            return
        lengths = map(len, subjects) if ascii else map(len, map(str.encode, subjects))
        costs = list(map(overhead.__add__, lengths))
        running = list(accumulate(costs, initial=0))  # running[i]: the first i subjects
        start = 0
        while start < count:
            room = self.limit - base - costs[start] + running[start]
            end = max(start + 1, bisect_right(running, room) - 1)
            yield start, end
            start = end

    def completions(self, cause: Cause, records: list[EnforcementRecord],
                    emitted_at: datetime) -> list[EnforcementRecord]:
        """One `enforcement_completed` per owned partition, counting the cause's `records`
        there."""
        counts = {partition: [0, 0] for partition in self.owned}
        for record in records:
            count = counts[record.partition]
            count[0] += 1
            count[1] += record.changes
        return [EnforcementRecord(COMPLETED, partition, {
            "position": cause.position, "moment": cause.moment, "partition": partition,
            "records": written, "changes": changes, "shard": self.shard,
            "shards": self.shards, "recorded_at": cause.recorded_at, "emitted_at": emitted_at,
        }) for partition, (written, changes) in counts.items()]


def _merged(groups: Iterable[ChangeGroup]) -> list[
    tuple[ChangeGroup, Sequence[str], list[datetime] | None, list[str] | None]
]:
    """Groups alike but for `at` and what each subject cites, as one: (the first of them,
    every subject, each subject's `at` or None when they share one, each subject's cited
    entitlement or None when they cite none of their own), in the order each first appears."""
    merged: dict[tuple[Any, ...], list[ChangeGroup]] = {}
    for group in groups:
        key = (group.kind, group.model, group.effect, group.route_to, group.disclosed,
               group.shape, group.position, group.received_at, group.recorded_at,
               group.emitted_at, group.first)
        merged.setdefault(key, []).append(group)
    found: list[tuple[ChangeGroup, Sequence[str], list[datetime] | None, list[str] | None]] = []
    for alike in merged.values():
        first = alike[0]
        if len(alike) == 1:
            found.append((first, first.subjects, None, list(first.cites) or None))
            continue
        subjects = list(chain.from_iterable(group.subjects for group in alike))
        ats = None
        if any(group.at != first.at for group in alike):
            ats = list(chain.from_iterable(repeat(group.at, len(group.subjects))
                                           for group in alike))
        cites = list(chain.from_iterable(group.cites for group in alike))
        found.append((first, subjects, ats, cites or None))
    return found


def _record(group: ChangeGroup, subjects: list[str], ats: list[datetime], at: datetime,
            cites: list[str]) -> dict[str, Any]:
    """The Avro record of a group's changes to `subjects`, from `at` (the first subject's;
    each one's in `ats` when they differ), the reasons the first subject's (each one's cited
    entitlement in `cites`); `first` and `cites` exist in access_restored only."""
    reasons = group.reasons if not cites else citing(group.reasons, cites[0])
    record = {
        "subject": subjects[0],
        "subjects": subjects,
        "ats": ats,
        "model": group.model,
        "effect": group.effect,
        "route_to": group.route_to,
        "disclosed": group.disclosed,
        "reasons": reasons_json(reasons),
        "at": at,
        "position": group.position,
        "received_at": group.received_at,
        "recorded_at": group.recorded_at,
        "emitted_at": group.emitted_at,
    }
    if group.kind == "access_restored":
        record["first"] = group.first
        record["cites"] = cites
    return record


def changes_of(name: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """A decoded `access_revoked` / `access_restored` record as one record per subject, as
    versions before packing wrote them (`subjects` empty there: the one `subject`), each with
    its own reasons (`cites`: the ref of its `entitled` reason)."""
    subjects = record.get("subjects") or [record["subject"]]
    ats = record.get("ats") or [record["at"]] * len(subjects)
    cites = record.get("cites") or [None] * len(subjects)
    single = {key: value for key, value in record.items()
              if key not in ("subjects", "ats", "cites")}
    return [{**single, "subject": subject, "at": at,
             **({} if cited is None else {"reasons": [
                 {**reason, "ref": cited} if reason["code"] == "entitled" else reason
                 for reason in record["reasons"]]})}
            for subject, at, cited in zip(subjects, ats, cites, strict=True)]
