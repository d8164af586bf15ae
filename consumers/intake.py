"""`interlock intake`: commands from Kafka into the store, each exactly once.

The Kafka offset of every consumed command is recorded as eventsourcing tracking in the same
transaction as the events the command caused; on start the consumer seeks each partition to
the tracked offset. A redelivery or a crash therefore never duplicates or loses a fact. Input
that does not decode or validate goes to the dead-letter topic with the error in its headers.
"""

from __future__ import annotations

import logging
import threading

from eventsourcing.persistence import Tracking
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.kafka import DEFAULT_TOPICS, Topics, headers
from domain.application import Interlock
from domain.commands import Command, CommandError, parse_command_json
from schemas.codec import MAGIC, CodecError
from schemas.records import decode_command

log = logging.getLogger(__name__)


def decode(value: bytes | None) -> Command:
    """An Avro single-object command, or for convenience one JSON command document."""
    if not value:
        raise CommandError("", "empty message")
    if value.startswith(MAGIC):
        return decode_command(value)
    if value.lstrip()[:1] == b"{":
        return parse_command_json(value)
    raise CodecError("neither an Avro single-object message nor a JSON command")


class Intake:
    """Applies the commands of every partition of the commands topic, in offset order."""

    def __init__(self, app: Interlock, bootstrap: str, topics: Topics = DEFAULT_TOPICS) -> None:
        self.app = app
        self.topics = topics
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
            client_id="interlock-intake",
        )
        self.dlq = KafkaProducer(bootstrap_servers=bootstrap, client_id="interlock-intake-dlq")
        partitions = self.consumer.partitions_for_topic(topics.commands) or {0}
        self.partitions = [TopicPartition(topics.commands, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)
        for partition in self.partitions:
            self.consumer.seek(partition, self.app.recorder.max_tracking_id(
                self._tracking_name(partition)) or 0)
        self.applied = 0
        self.rejected = 0

    def _tracking_name(self, partition: TopicPartition) -> str:
        return f"kafka:{partition.topic}:{partition.partition}"

    def poll(self, timeout_ms: int = 500) -> int:
        """Consumes what has arrived; returns how many messages were handled."""
        handled = 0
        for partition, records in self.consumer.poll(timeout_ms, max_records=2000).items():
            name = self._tracking_name(partition)
            rejected = False
            with self.app.batch(flush_every=len(records) + 1) as batch:
                for record in records:
                    try:
                        if batch.apply(decode(record.value)):
                            self.applied += 1
                    except (CommandError, CodecError) as error:
                        self._reject(record, error)
                        rejected = True
                    batch.track(Tracking(name, record.offset + 1))
                if rejected:
                    self.dlq.flush()
            handled += len(records)
        return handled

    def _reject(self, record: ConsumerRecord, error: Exception) -> None:
        self.rejected += 1
        log.warning("rejected %s[%s]@%s: %s", record.topic, record.partition, record.offset, error)
        self.dlq.send(
            self.topics.dlq, key=record.key, value=record.value,
            headers=headers(error=str(error), topic=record.topic, partition=record.partition,
                            offset=record.offset),
        )

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll()

    def close(self) -> None:
        self.consumer.close()
        self.dlq.close()
