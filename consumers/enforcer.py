"""`interlock enforce`: the kill switch over Kafka.

It follows `interlock.events` from the beginning into its own access index and, for each event
past the last one it enforced, publishes one `access_revoked` / `access_restored` record per
(subject, model) whose access changed, keyed by subject (`at`: the valid time from which the
new decision holds; `first` on an access_restored: a first grant, not a restoration). Records
and the consumed offset are committed in one Kafka transaction (consume-transform-produce), so
a crash neither loses nor repeats a revocation; readers use `isolation_level=read_committed`.
Its consumer group is `<prefix>interlock-enforcer` and its transactional id
`<prefix>interlock-enforcer-producer`.
"""

from __future__ import annotations

import threading
from typing import Any

from kafka import OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers import kafka
from consumers.kafka import DEFAULT_TOPICS, KafkaProcessError, Topics, header, headers
from domain.application import Clock, system_clock
from domain.decision import reasons_json
from projections.access_index import AccessIndex
from projections.enforcement import AccessChange, Enforcer
from schemas.codec import encode
from schemas.records import decode_event


def change_record(change: AccessChange) -> dict[str, Any]:
    """The Avro record of a change; `first` exists in access_restored (v2 on) only."""
    record = {
        "subject": change.subject,
        "model": change.model,
        "effect": change.effect,
        "route_to": change.route_to,
        "disclosed": change.disclosed,
        "reasons": reasons_json(change.reasons),
        "at": change.at,
        "position": change.position,
        "received_at": change.received_at,
        "recorded_at": change.recorded_at,
        "emitted_at": change.emitted_at,
    }
    if change.kind == "access_restored":
        record["first"] = change.first
    return record


class EnforcerProcess:
    """Consumes events, enforces, and commits its progress with what it published."""

    def __init__(
        self, bootstrap: str, topics: Topics = DEFAULT_TOPICS, clock: Clock = system_clock,
    ) -> None:
        self.topics = topics
        self.group = topics.name("enforcer")
        self.enforcer = Enforcer(AccessIndex(), clock)
        self.consumer = kafka.consumer(
            bootstrap, self.group, group_id=self.group, enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.partition = TopicPartition(topics.events, 0)
        self.consumer.assign([self.partition])
        committed = self.consumer.committed(self.partition)
        self.enforced_offset = committed or 0
        """Events before this offset were enforced by an earlier run: replayed silently."""
        self.consumer.seek_to_beginning(self.partition)
        self.producer = kafka.producer(
            bootstrap, self.group, transactional_id=f"{self.group}-producer", linger_ms=5,
            batch_size=256 * 1024,
        )
        self.producer.init_transactions()
        self.published = 0

    @property
    def position(self) -> int:
        return self.enforcer.index.position

    def poll(self, timeout_ms: int = 200) -> int:
        """Handles what has arrived (and what time has brought); returns the records handled."""
        records = self.consumer.poll(timeout_ms, max_records=5000).get(self.partition, [])
        changes: list[AccessChange] = []
        live = False
        for record in records:
            position = int(header(record, "position") or 0)
            emit = record.offset >= self.enforced_offset
            live = live or emit
            if position <= self.enforcer.index.position:
                continue
            changes += self.enforcer.apply(event_of(record, position), position, emit=emit)
        if live or not records:
            changes += self.enforcer.tick()
        if records and live:
            self._publish(changes, records[-1].offset + 1)
        elif changes:
            self._publish(changes, None)
        return len(records)

    def _publish(self, changes: list[AccessChange], next_offset: int | None) -> None:
        self.producer.begin_transaction()
        try:
            for change in changes:
                self.producer.send(
                    self.topics.enforcement, key=change.subject.encode(),
                    value=encode(change.kind, change_record(change)),
                    headers=headers(type=change.kind, position=change.position),
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
        self.published += len(changes)

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
