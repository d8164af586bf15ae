"""Topic names, the deployment's client ids and the Kafka plumbing the processes share.

Every Kafka client Interlock makes comes from `consumer`, `producer` or `admin` below, so each
one waits a bounded time for a broker (an unreachable broker is reported in seconds, not after
kafka-python's 30 s defaults and a traceback) and each producer's request size matches the
topics' `max.message.bytes`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from consumers.packing import ENFORCEMENT_PARTITIONS
from domain.limits import KAFKA_MAX_MESSAGE_BYTES

KAFKA_VARIABLE = "INTERLOCK_KAFKA"

BOOTSTRAP_TIMEOUT_MS = 6_000
"""How long a client waits for a first answer from the bootstrap servers before giving up."""
REQUEST_TIMEOUT_MS = 10_000
"""How long one request to a broker may take."""
MAX_BLOCK_MS = 10_000
"""How long a producer may block on metadata or on initialising its transactions."""
DELIVERY_TIMEOUT_S = 30
"""How long a producer waits for the broker to acknowledge one record before giving up."""
CLOSE_TIMEOUT_S = 5
"""How long a closing producer may spend delivering what it still holds."""


class KafkaProcessError(Exception):
    """A Kafka process cannot go on; the message is the one line its command prints."""


@dataclass(frozen=True)
class Topics:
    """The four topics of one deployment and the names of its processes.

    The prefix keeps deployments (and test runs) sharing one broker apart: their topics, and
    with `name` their transactional ids and consumer groups, so that one deployment's producers
    never fence another's and their committed offsets never mix.
    """

    commands: str = "interlock.commands"
    dlq: str = "interlock.commands.dlq"
    events: str = "interlock.events"
    enforcement: str = "interlock.enforcement"
    prefix: str = ""

    @classmethod
    def prefixed(cls, prefix: str) -> Topics:
        """The four names behind `prefix` (the usual names for an empty one)."""
        return cls(*(f"{prefix}{name}" for name in (
            cls.commands, cls.dlq, cls.events, cls.enforcement
        )), prefix=prefix)

    def name(self, role: str) -> str:
        """The transactional id, consumer group and client id of one of the deployment's
        processes: `interlock-relay`, `interlock-enforcer`, … behind the topic prefix."""
        return f"{self.prefix}interlock-{role}"

    def partitions(self) -> dict[str, int]:
        """`interlock.events` has one partition: it is the store's order, position by position.
        `interlock.commands` has one too: Kafka orders records within a partition only, and a
        command may name what an earlier one created (a model, then a directive on it)."""
        return {self.commands: 1, self.dlq: 1, self.events: 1,
                self.enforcement: ENFORCEMENT_PARTITIONS}


DEFAULT_TOPICS = Topics()


def bootstrap_servers(given: str | None = None) -> str:
    servers = given or os.environ.get(KAFKA_VARIABLE)
    if not servers:
        raise ValueError(f"no Kafka: give --kafka HOST:PORT or set {KAFKA_VARIABLE}")
    return servers


def _bounded(bootstrap: str, client_id: str) -> dict[str, Any]:
    return {"bootstrap_servers": bootstrap, "client_id": client_id,
            "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS, "request_timeout_ms": REQUEST_TIMEOUT_MS}


def _reaching(bootstrap: str, make: Any, **config: Any) -> Any:
    """A client from `make`, or KafkaProcessError naming the servers when none answers."""
    try:
        return make(**config)
    except KafkaTimeoutError:
        raise KafkaProcessError(
            f"no Kafka broker answers at {bootstrap} (waited {BOOTSTRAP_TIMEOUT_MS // 1000} s)"
        ) from None


def consumer(bootstrap: str, client_id: str, **config: Any) -> KafkaConsumer:
    """A consumer that gives up on an unanswering broker within BOOTSTRAP_TIMEOUT_MS."""
    return _reaching(bootstrap, KafkaConsumer, **_bounded(bootstrap, client_id), **config)


def producer(bootstrap: str, client_id: str, max_request_size: int = KAFKA_MAX_MESSAGE_BYTES,
             **config: Any) -> KafkaProducer:
    """A producer bounded like `consumer`, whose requests fit the topics' message size."""
    return _reaching(bootstrap, KafkaProducer, **_bounded(bootstrap, client_id),
                     max_block_ms=MAX_BLOCK_MS, max_request_size=max_request_size, **config)


def admin(bootstrap: str, topics: Topics) -> KafkaAdminClient:
    return _reaching(bootstrap, KafkaAdminClient, **_bounded(bootstrap, topics.name("admin")))


def ensure_topics(bootstrap: str, topics: Topics) -> None:
    """Creates the topics that do not exist yet, with `max.message.bytes` =
    KAFKA_MAX_MESSAGE_BYTES. Existing ones are left as they are (see Intake on a commands
    topic with several partitions, Relay on a smaller `max.message.bytes`)."""
    client = admin(bootstrap, topics)
    try:
        wanted = topics.partitions()
        existing = {t["name"] for t in client.describe_topics()}
        missing = {
            name: {"num_partitions": count, "replication_factor": 1,
                   "configs": {"max.message.bytes": str(KAFKA_MAX_MESSAGE_BYTES)}}
            for name, count in wanted.items() if name not in existing
        }
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                client.create_topics(missing, wait_for_metadata=True)
    finally:
        client.close()


def message_limit(bootstrap: str, topics: Topics, topic: str) -> int:
    """The topic's `max.message.bytes`: the largest record batch the broker takes for it."""
    client = admin(bootstrap, topics)
    try:
        found = client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None})],
            config_filter="all")
        return int(found["topic"][topic]["max.message.bytes"]["value"])
    finally:
        client.close()


STORE_FAULTS: tuple[type[BaseException], ...] = (
    PersistenceError, sqlite3.Error, psycopg.Error, OSError
)
"""Faults of the event store itself (locked, unreachable, I/O): waited out and retried, never
blamed on the input being applied."""


class Backoff:
    """Waits that double from 0.1 s up to 5 s between attempts at something that keeps failing."""

    def __init__(self, first: float = 0.1, longest: float = 5.0) -> None:
        self.first = self.delay = first
        self.longest = longest
        self.tried = False
        """Whether a wait has happened: the next attempt is a retry."""

    def wait(self, stop: Any = None) -> None:
        """Sleeps for the next delay (or until `stop`, a threading.Event, is set)."""
        if stop is None:
            time.sleep(self.delay)
        else:
            stop.wait(self.delay)
        self.delay = min(self.delay * 2, self.longest)
        self.tried = True

    def reset(self) -> None:
        self.delay = self.first
        self.tried = False


def read_range(consumer: KafkaConsumer, partition: TopicPartition, start: int, end: int
               ) -> list[ConsumerRecord]:
    """The records of `partition` at offsets [start, end) that the consumer may read (with
    `read_committed`: the committed ones)."""
    consumer.seek(partition, start)
    found: list[ConsumerRecord] = []
    deadline = time.monotonic() + REQUEST_TIMEOUT_MS / 1000
    while consumer.position(partition) < end:
        batch = consumer.poll(500).get(partition, [])
        found += (record for record in batch if record.offset < end)
        if batch:
            deadline = time.monotonic() + REQUEST_TIMEOUT_MS / 1000
        elif time.monotonic() > deadline:
            raise KafkaProcessError(f"{partition.topic}: cannot read offsets {start}-{end}")
    return found


def read_backwards(consumer: KafkaConsumer, partition: TopicPartition, first: int = 64
                   ) -> Iterator[list[ConsumerRecord]]:
    """The partition's records from its end back to its start, in chunks (each in offset order)
    that grow fourfold, so that a reader looking for something near the end reads little."""
    consumer.assign([partition])
    end = consumer.end_offsets([partition])[partition]
    span = first
    while end > 0:
        start = max(0, end - span)
        yield read_range(consumer, partition, start, end)
        end, span = start, span * 4


def seek_after(consumer: KafkaConsumer, partition: TopicPartition, position: int,
               timeout: float = 120.0) -> int:
    """Seeks `interlock.events` to an offset before which every record's `position` header is
    at most `position`, as late as bisection finds (positions grow with offsets): the first
    record after it, up to records that are not there (transaction markers, aborted records).
    A few fetches instead of reading millions of records; returns the offset."""
    consumer.seek_to_beginning(partition)
    if position <= 0:
        return consumer.position(partition)
    low = consumer.beginning_offsets([partition])[partition]
    high = consumer.end_offsets([partition])[partition]
    deadline = time.monotonic() + timeout
    while low < high:
        middle = (low + high) // 2
        found = _first_record(consumer, partition, middle, high, deadline)
        if found is not None and int(header(found, "position") or 0) <= position:
            low = found.offset + 1
        else:  # none in [middle, high), or the first there is already after `position`
            high = middle
    consumer.seek(partition, low)
    return low


def _first_record(consumer: KafkaConsumer, partition: TopicPartition, offset: int, before: int,
                  deadline: float) -> ConsumerRecord | None:
    """The first record the consumer may read at or after `offset` and before `before`."""
    consumer.seek(partition, offset)
    while consumer.position(partition) < before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{partition.topic}: no answer at offset {offset}")
        records = consumer.poll(500, max_records=1).get(partition, [])
        if records:
            return records[0] if records[0].offset < before else None
    return None


def header(record: ConsumerRecord, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return value
    return None


def headers(**values: object) -> list[tuple[str, bytes]]:
    return [(key, str(value).encode()) for key, value in values.items() if value is not None]


def positions(records: Iterable[ConsumerRecord]) -> list[int]:
    """The store positions that `interlock.events` records carry in their `position` header."""
    found = []
    for record in records:
        value = header(record, "position")
        if value is not None:
            found.append(int(value))
    return found
