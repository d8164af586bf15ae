"""`interlock enforce`: the kill switch over Kafka, as one process or as N shards.

It follows `interlock.events` from the beginning into its own access index and, for each event
past the last one it enforced, publishes packed `access_revoked` / `access_restored` records
(see `consumers.packing`: a record per verdict and partition, subjects listed, each subject in
the partition keying by it would choose), then an `enforcement_completed` record per owned
partition for each cause. `at` is the valid time from which the new decision holds; `first` on
an access_restored marks a first grant, not a restoration. Records and the consumed offset
are committed in one Kafka transaction (consume-transform-produce), so a crash neither loses
nor repeats a record; readers use `isolation_level=read_committed`.

Shards (`--shard k/N`): every shard follows all of `interlock.events` and keeps the whole
index, but owns the partitions p of `interlock.enforcement` with p % N == k and judges only
the subjects that key to them (`Enforcer(owns=...)`), so together the N shards publish what
one enforcer would, each partition written by one shard only. Each shard has its own consumer
group `<prefix>interlock-enforcer-k-of-N` and transactional id `<group>-producer` (a single
enforcer keeps `<prefix>interlock-enforcer`), so a restarted shard fences its killed
predecessor, aborts what it left open, and resumes from its own committed offset.

A new shard or enforcer (its group has no committed offset) takes the events already on the
topic as enforced before it, replays them silently and commits that starting point at once;
`from_beginning` (`enforce --from-beginning`) makes it enforce the whole history instead.

A fresh shard at scale starts from an index snapshot (`enforce --snapshot FILE --store URL`)
rather than replaying millions of events: the index is restored (`restore_index`, which checks
the snapshot belongs to the store), the reach indexes are read from its facts (`Reach.of`),
the timetable from the store's events whose moments are still to come (`Enforcer.resume`),
and the topic is read from the first record after the snapshot's position (`seek_after`),
silently up to the enforced offset, then live. The snapshot may only stand for events this
shard has enforced: when the first record after its position lies past the committed offset
(a shard restarted with a newer snapshot, `--from-beginning` on a topic that holds the
snapshot's events), or when it does not fit the store, it is ignored, logged, and the topic is
replayed from its beginning, so a snapshot never makes a shard skip or repeat a record.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers import kafka
from consumers.kafka import DEFAULT_TOPICS, KafkaProcessError, Topics, header, seek_after
from consumers.packing import COMPLETED, Cause, EnforcementRecord, Packer, Partitioner
from domain.aggregates import Directive
from domain.application import Clock, Interlock, system_clock
from domain.limits import MAX_ENFORCEMENT_RECORD_BYTES
from projections.access_index import AccessIndex
from projections.enforcement import ChangeGroup, Enforcer
from projections.event_pages import events_at
from projections.gc_pause import gc_paused
from projections.snapshot import SnapshotInfo, restore_index
from schemas.records import decode_event

log = logging.getLogger(__name__)

ORDERS = (Directive.Issued, Directive.Amended, Directive.Lifted)
"""Events whose enforcement is always closed by completion records, even with no change."""
_SHARD = re.compile(r"^([0-9]{1,4})/([0-9]{1,4})$")


@dataclass(frozen=True)
class Shard:
    """Shard k of N: the enforcement partitions p with p % N == k."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`k/N`, 0 <= k < N; ValueError saying what is wrong otherwise."""
        match = _SHARD.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not k/N (e.g. 0/2)")
        index, count = int(match[1]), int(match[2])
        if not 0 <= index < count:
            raise ValueError(f"{text!r}: k must be at least 0 and less than N")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def group(self, topics: Topics) -> str:
        """The consumer group (and transactional id stem) of this shard."""
        if self.count == 1:
            return topics.name("enforcer")
        return topics.name(f"enforcer-{self.index}-of-{self.count}")

    def partitions(self, total: int) -> list[int]:
        return [partition for partition in range(total) if partition % self.count == self.index]


class EnforcerProcess:
    """Consumes events, enforces its shard's share, and commits its progress with what it
    published."""

    def __init__(
        self, bootstrap: str, topics: Topics = DEFAULT_TOPICS, clock: Clock = system_clock,
        shard: Shard = Shard(), from_beginning: bool = False, snapshot: Path | None = None,
        store: Interlock | None = None,
    ) -> None:
        self.topics = topics
        self.clock = clock
        self.shard = shard
        self.group = shard.group(topics)
        self.consumer = kafka.consumer(
            bootstrap, self.group, group_id=self.group, enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.partition = TopicPartition(topics.events, 0)
        self.consumer.assign([self.partition])
        self.producer = kafka.producer(
            bootstrap, self.group, transactional_id=f"{self.group}-producer", linger_ms=5,
            batch_size=MAX_ENFORCEMENT_RECORD_BYTES,
        )
        self.producer.init_transactions()
        total = len(self.producer.partitions_for(topics.enforcement))
        if shard.count > total:
            raise KafkaProcessError(f"--shard {shard}: {topics.enforcement} has {total} "
                                    f"partitions, so at most {total} shards")
        self.partitioner = Partitioner(total)
        owned = frozenset(shard.partitions(total))
        self.packer = Packer(self.partitioner, owned, shard.index, shard.count)
        self.published = 0
        self._learned = False
        committed = self.consumer.committed(self.partition)
        if committed is None:
            committed = 0 if from_beginning else self.consumer.end_offsets(
                [self.partition])[self.partition]
            self._publish([], committed)
        self.enforced_offset = committed
        """Events before this offset were enforced by an earlier run (or before this shard
        existed): replayed silently."""
        self.snapshot: SnapshotInfo | None = None
        """The index snapshot this run started from, if one fitted."""
        index = self._start(snapshot, store)
        partition_of = self.partitioner
        self.enforcer = Enforcer(
            index, clock, emitting=False,
            owns=None if shard.count == 1 else lambda subject: partition_of(subject) in owned,
        )
        if store is not None and self.snapshot is not None:
            self.enforcer.resume(lambda positions: events_at(store, positions))

    def _start(self, snapshot: Path | None, store: Interlock | None) -> AccessIndex:
        """The index to start from, the consumer at the first record it lacks: the snapshot's
        when it fits the store (`restore_index`) and holds nothing this shard has not enforced
        (the first record after its position is at or before `enforced_offset`), else an
        empty one, the topic read from its beginning (logged)."""
        restored = None if snapshot is None or store is None else restore_index(
            snapshot, store.recorder, replaying=self.topics.events)
        if restored is not None:
            index, info = restored
            start = seek_after(self.consumer, self.partition, info.position)
            if start <= self.enforced_offset:
                self.snapshot = info
                return index
            log.warning(
                "ignoring index snapshot %s: %s holds events up to position %d past offset "
                "%d, which %s has not enforced; replaying the topic", snapshot,
                self.topics.events, info.position, self.enforced_offset, self.group)
        self.consumer.seek_to_beginning(self.partition)
        return AccessIndex()

    @property
    def position(self) -> int:
        return self.enforcer.index.position

    def poll(self, timeout_ms: int = 200) -> int:
        """Handles what has arrived (and what time has brought); returns the records handled."""
        records = self.consumer.poll(timeout_ms, max_records=5000).get(self.partition, [])
        index = self.enforcer.index
        known = index.position
        silent: list[tuple[Any, int]] = []
        live: list[tuple[Any, int]] = []
        for record in records:
            position = int(header(record, "position") or 0)
            if position <= known:
                continue
            known = position
            events = live if record.offset >= self.enforced_offset else silent
            events.append((event_of(record, position), position))
        if silent:  # what is built is kept: out of the collector's way (gc_paused)
            self.enforcer.emitting = False
            with gc_paused(freeze=True):
                index.apply_all(silent)
        out: list[EnforcementRecord] = []
        caught_up = self.consumer.position(self.partition) >= self.enforced_offset
        if caught_up and not self._learned:  # before the first order: see Partitioner
            with gc_paused(freeze=True):
                self.partitioner.learn(index.facts.subjects)
            self._learned = True
        with gc_paused():  # an order's groups and records: many objects, no cycles
            if live:
                self.enforcer.emitting = True
                index.apply_all(live)
                out += self._enforced(live, self.enforcer.take_groups())
            if caught_up and (live or not records):
                out += self._came(self.enforcer.tick_groups())
            if records and records[-1].offset >= self.enforced_offset:
                self._publish(out, records[-1].offset + 1)
            elif out:
                self._publish(out, None)
        return len(records)

    def _enforced(self, events: list[tuple[Any, int]], groups: list[ChangeGroup]
                  ) -> list[EnforcementRecord]:
        """The records of each applied event's changes, each event's closed by completions."""
        by_position: dict[int, list[ChangeGroup]] = {}
        for group in groups:
            by_position.setdefault(group.position, []).append(group)
        out: list[EnforcementRecord] = []
        for event, position in events:
            caused = by_position.get(position)
            if caused or isinstance(event, ORDERS):
                out += self._closed(Cause(position, event.timestamp), caused or [])
        return out

    def _came(self, groups: Iterable[ChangeGroup]) -> list[EnforcementRecord]:
        """The records of changes whose moment came, closed per (cause, moment)."""
        by_cause: dict[Cause, list[ChangeGroup]] = {}
        for group in groups:
            by_cause.setdefault(Cause(group.position, group.recorded_at, group.at), []).append(
                group)
        out: list[EnforcementRecord] = []
        for cause, caused in by_cause.items():
            out += self._closed(cause, caused)
        return out

    def _closed(self, cause: Cause, groups: list[ChangeGroup]) -> list[EnforcementRecord]:
        records = self.packer.records(groups)
        return records + self.packer.completions(cause, records, self.clock())

    def _publish(self, records: list[EnforcementRecord], next_offset: int | None) -> None:
        self.producer.begin_transaction()
        try:
            for record in records:
                self.producer.send(
                    self.topics.enforcement, partition=record.partition, value=record.encode(),
                    headers=record.headers(),
                )
            if next_offset is not None:
                self.producer.send_offsets_to_transaction(
                    {self.partition: OffsetAndMetadata(next_offset, "", -1)}, self.group
                )
            self.producer.commit_transaction()
        except BaseException:
            self.producer.abort_transaction()
            raise
        if next_offset is not None:
            self.enforced_offset = next_offset
        self.published += sum(record.name != COMPLETED for record in records)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll()

    def close(self) -> None:
        self.consumer.close()
        self.producer.close(timeout=kafka.CLOSE_TIMEOUT_S)


def event_of(record: ConsumerRecord, position: int) -> Any:
    """The stored event a record of the events topic carries; one that does not decode stops
    the enforcer (skipping it would enforce on wrong facts), naming where it is."""
    try:
        return decode_event(record.value)
    except Exception as error:
        raise KafkaProcessError(f"{record.topic}@{record.offset} (position {position}): "
                                f"cannot decode the event: {error}") from None
