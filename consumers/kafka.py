"""Topic names and the Kafka plumbing the three processes share."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import TopicAlreadyExistsError

KAFKA_VARIABLE = "INTERLOCK_KAFKA"


@dataclass(frozen=True)
class Topics:
    """Interlock's four topics; a prefix keeps test runs and deployments apart."""

    commands: str = "interlock.commands"
    dlq: str = "interlock.commands.dlq"
    events: str = "interlock.events"
    enforcement: str = "interlock.enforcement"

    @classmethod
    def prefixed(cls, prefix: str) -> Topics:
        """The four names behind `prefix` (the usual names for an empty one)."""
        return cls(*(f"{prefix}{name}" for name in (
            cls.commands, cls.dlq, cls.events, cls.enforcement
        )))

    def partitions(self) -> dict[str, int]:
        """`interlock.events` has one partition: it is the store's order, position by position."""
        return {self.commands: 3, self.dlq: 1, self.events: 1, self.enforcement: 3}


DEFAULT_TOPICS = Topics()


def bootstrap_servers(given: str | None = None) -> str:
    servers = given or os.environ.get(KAFKA_VARIABLE)
    if not servers:
        raise ValueError(f"no Kafka: give --kafka HOST:PORT or set {KAFKA_VARIABLE}")
    return servers


def ensure_topics(bootstrap: str, topics: Topics) -> None:
    """Creates the topics that do not exist yet."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interlock-admin")
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, partitions, replication_factor=1)
            for name, partitions in topics.partitions().items() if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()


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
