"""The decision log on Kafka: the topic `interlock.decisions`, one Avro single-object record
(`decision_log_entry`, schemas/) per entry, keyed by subject (prune records by `prune`).

A group commit is one Kafka transaction (so `acks=all`): durable once committed, and read
(`read_committed`) all or none. The topic is created with `retention.ms=-1`, so the broker
never drops an entry by age on its own: entries go only through `prune`, which keeps the chains
verifiable.

Reads (query, audit, prune) read the whole topic into a `MemoryLog`; a log kept for years and
queried often is better kept in PostgreSQL. Pruning deletes a prefix of each partition
(`DeleteRecords`): the largest one that removes, per chain, only a prefix of entries served
before the cutoff (entries of one chain are spread over partitions by subject), and writes the
prune record, which carries every chain's genesis, before it deletes, so an interrupted prune
leaves entries the next one removes.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from domain.decision import Decision, Reason, reasons_json
from domain.limits import KAFKA_MAX_MESSAGE_BYTES
from projections.decision_log import (
    Entry,
    Genesis,
    LogQuery,
    LogReadError,
    MemoryLog,
    Pruned,
    PruneResult,
    Served,
    genesis_of,
    merged_genesis,
    micros,
    prune_record,
)
from schemas.codec import CodecError, SchemaRegistry, default_registry
from schemas.records import DECISION_LOG_RECORDS

DECISIONS_TOPIC = "interlock.decisions"
PARTITIONS = 3
PRUNE_KEY = b"prune"
READ_IDLE_SECONDS = 30.0
"""A read of the topic gives up when no record arrives for this long before its end."""
TRANSACTION_TIMEOUT_MS = 10_000
"""A writer that dies inside a commit holds readers back at most this long."""

(RECORD,) = DECISION_LOG_RECORDS


def entry_to_record(entry: Entry) -> dict[str, Any]:
    served, pruned = entry.served, entry.pruned
    decision = None
    if served is not None:
        d = served.decision
        decision = {"subject": d.subject, "model": d.model, "family": served.family,
                    "at": d.at, "known_at": served.known_at, "location": served.location,
                    "purpose": served.purpose, "effect": d.effect, "route_to": d.route_to,
                    "disclosed": d.disclosed,
                    "reasons": reasons_json(d.reasons),
                    "as_of": d.as_of}
    prune = None if pruned is None else {
        "cutoff": pruned.cutoff, "removed": pruned.removed,
        "genesis": [{"chain": g.chain, "seq": g.seq, "link": g.link} for g in pruned.genesis],
    }
    return {"entry_id": entry.entry_id, "kind": entry.kind, "served_at": entry.served_at,
            "replica": entry.replica, "chain": entry.chain, "seq": entry.seq,
            "decision": decision, "prune": prune, "digest": entry.digest, "link": entry.link}


def entry_from_record(record: dict[str, Any]) -> Entry:
    served = pruned = None
    if (d := record["decision"]) is not None:
        decision = Decision(d["subject"], d["model"], d["effect"], d["route_to"],
                            d["disclosed"], tuple(Reason(r["code"], r["ref"])
                                                  for r in d["reasons"]), d["at"], d["as_of"])
        served = Served(decision, d["family"], d["known_at"], d["location"], d["purpose"])
    if (p := record["prune"]) is not None:
        pruned = Pruned(p["cutoff"], p["removed"], tuple(
            Genesis(g["chain"], g["seq"], g["link"]) for g in p["genesis"]))
    return Entry(record["entry_id"], micros(record["served_at"]), record["replica"],
                 record["chain"], record["seq"], served, pruned, record["digest"],
                 record["link"])


def ensure_decisions_topic(bootstrap: str, topic: str) -> None:
    """Creates the topic (kept until pruned) if it does not exist."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interlock-admin")
    try:
        if topic not in set(admin.list_topics()):
            configs = {"retention.ms": "-1", "max.message.bytes": str(KAFKA_MAX_MESSAGE_BYTES)}
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, PARTITIONS, replication_factor=1,
                                              topic_configs=configs)])
    finally:
        admin.close()


_Located = tuple[int, int, Entry]
"""(partition, offset, entry)."""


class KafkaDecisionLog:
    """The decision log on `topic`; see the module docstring."""

    def __init__(self, bootstrap: str, topic: str = DECISIONS_TOPIC,
                 registry: SchemaRegistry | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.registry = registry or default_registry()
        ensure_decisions_topic(bootstrap, topic)
        self._producer: KafkaProducer | None = None

    def _produce(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, linger_ms=0,
                max_request_size=KAFKA_MAX_MESSAGE_BYTES, client_id="interlock-decision-log",
                transactional_id=f"interlock-decisions-{uuid.uuid4()}",
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
            self._producer.init_transactions()
        return self._producer

    def append(self, entries: Sequence[Entry]) -> None:
        """One Kafka transaction per group commit: a reader sees all of it or none."""
        producer = self._produce()
        encode = self.registry.encode
        producer.begin_transaction()
        try:
            for e in entries:
                producer.send(self.topic, key=PRUNE_KEY if e.served is None
                              else e.served.decision.subject.encode(),
                              value=encode(RECORD, entry_to_record(e)))
            producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                producer.abort_transaction()
            raise

    # --- reads -----------------------------------------------------------------------------

    def read(self) -> list[_Located]:
        """Every entry on the topic, with where it sits."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 group_id=None, client_id="interlock-decision-log-reader",
                                 isolation_level="read_committed")
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            end = consumer.end_offsets(assigned)
            found: list[_Located] = []
            idle_since = time.monotonic()
            while any(consumer.position(tp) < end[tp] for tp in assigned):
                batches = consumer.poll(timeout_ms=500)
                if not batches:
                    if time.monotonic() - idle_since > READ_IDLE_SECONDS:
                        raise LogReadError(f"{self.topic}: no records for "
                                           f"{READ_IDLE_SECONDS:g} s before the topic's end")
                    continue
                idle_since = time.monotonic()
                for tp, records in batches.items():
                    for record in records:
                        if record.offset < end[tp]:
                            found.append((tp.partition, record.offset,
                                          self._decode(tp.partition, record.offset,
                                                       record.value)))
            return found
        finally:
            consumer.close()

    def _decode(self, partition: int, offset: int, value: bytes) -> Entry:
        try:
            name, record = self.registry.decode(value)
            if name != RECORD:
                raise CodecError(f"a {name} record, not a {RECORD}")
            return entry_from_record(record)
        except (CodecError, KeyError, TypeError) as error:
            raise LogReadError(f"{self.topic} partition {partition} offset {offset}: "
                               f"{error}") from None

    def snapshot(self) -> MemoryLog:
        """The topic as read now, for the reads of one audit."""
        return MemoryLog([entry for _, _, entry in self.read()])

    def select(self, asked: LogQuery) -> Iterator[Entry]:
        return self.snapshot().select(asked)

    def chain_ranges(self, start: datetime | None, end: datetime | None
                     ) -> dict[str, tuple[int, int]]:
        return self.snapshot().chain_ranges(start, end)

    def chain_entries(self, chain: str, low: int, high: int) -> Iterator[Entry]:
        return self.snapshot().chain_entries(chain, low, high)

    def entry_before(self, chain: str, seq: int) -> Entry | None:
        return self.snapshot().entry_before(chain, seq)

    def prunes(self) -> list[Entry]:
        return self.snapshot().prunes()

    # --- pruning ---------------------------------------------------------------------------

    def prune(self, cutoff: datetime, replica: str) -> PruneResult:
        located = self.read()
        earlier = genesis_of(e for _, _, e in located if e.pruned is not None)
        floor = {chain: g.seq for chain, g in earlier.items()}
        cut = micros(cutoff)
        chains: dict[str, dict[int, _Located]] = defaultdict(dict)
        partitions: dict[int, list[_Located]] = defaultdict(list)
        for item in located:
            partitions[item[0]].append(item)
            if item[2].served is not None:
                chains[item[2].chain][item[2].seq] = item
        for items in partitions.values():
            items.sort(key=lambda item: item[1])

        def key(item: _Located) -> tuple[int, int]:
            return item[0], item[1]

        def chain_prefixes(allowed: set[tuple[int, int]]) -> set[tuple[int, int]]:
            chosen = {key(i) for i in located if i[2].pruned is not None and key(i) in allowed}
            for chain, entries in chains.items():
                low = floor.get(chain, 0)
                chosen |= {key(i) for s, i in entries.items() if s <= low and key(i) in allowed}
                seq = low + 1
                while (item := entries.get(seq)) is not None and item[2].served_us < cut \
                        and key(item) in allowed:
                    chosen.add(key(item))
                    seq += 1
            return chosen

        def partition_prefixes(chosen: set[tuple[int, int]]) -> set[tuple[int, int]]:
            kept = set()
            for items in partitions.values():
                for item in items:
                    if key(item) not in chosen:
                        break
                    kept.add(key(item))
            return kept

        allowed = {key(i) for i in located}
        while (prefix := partition_prefixes(chosen := chain_prefixes(allowed))) != chosen:
            allowed = prefix
        now = []
        removed = 0
        for chain, entries in sorted(chains.items()):
            gone = [s for s, item in entries.items() if key(item) in chosen]
            removed += len(gone)
            last = max(gone, default=0)
            if last > floor.get(chain, 0):
                now.append(Genesis(chain, last, entries[last][2].link))
        if not removed:
            return PruneResult(cutoff, 0, None)
        record = prune_record(replica, micros(datetime.now(UTC)),
                              Pruned(cutoff, removed, merged_genesis(earlier, now)))
        self.append([record])
        offsets = {}
        for partition, items in partitions.items():
            deleted = [offset for p, offset, _ in items if (p, offset) in chosen]
            if deleted:
                offsets[TopicPartition(self.topic, partition)] = max(deleted) + 1
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="interlock-admin")
        try:
            admin.delete_records(offsets)
        finally:
            admin.close()
        return PruneResult(cutoff, removed, record)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None

