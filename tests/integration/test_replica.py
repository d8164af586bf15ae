"""A decision replica fed by `interlock.events` decides exactly as the store-fed index does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumers.events_follower import EventsFollower
from consumers.kafka import Topics, ensure_topics
from consumers.relay import Relay
from domain.commands import parse_command
from interlock.demo import MODELS, ORDER_COMMAND, synthetic_population
from interlock.engine import open_engine
from projections.access_index import AccessIndex
from projections.store_follower import StoreFollower

pytestmark = pytest.mark.kafka


def test_replica_follows_the_events_topic_and_ignores_duplicates(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.prefixed(f"r{uuid.uuid4().hex[:8]}.")
    ensure_topics(kafka_bootstrap, topics)
    engine = open_engine(f"sqlite:///{tmp_path}/store.db", catch_up=False)
    engine.app.apply_all(parse_command(c) for c in synthetic_population(150).commands)
    relay = Relay(engine.app, kafka_bootstrap, topics)
    while relay.publish():
        pass

    replica = EventsFollower(AccessIndex(), kafka_bootstrap, topics)
    try:
        assert replica.catch_up() == engine.app.position

        # a duplicate of the first record (as a crashed relay might send) changes nothing
        first = next(iter(_read_all(kafka_bootstrap, topics.events)))
        duplicate = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        duplicate.send(topics.events, value=first.value, headers=first.headers)
        duplicate.flush()
        duplicate.close()
        engine.app.apply(parse_command(ORDER_COMMAND))
        relay.publish()
        assert replica.catch_up() == engine.app.position

        engine.catch_up()
        now = datetime.now(UTC)
        for subject in engine.index.facts.subjects:
            for model in MODELS:
                assert replica.index.decide(subject, model, at=now) == engine.index.decide(
                    subject, model, at=now
                )
    finally:
        replica.stop()
        relay.close()
        engine.close()


@pytest.mark.parametrize("started_at", [1, 200, -1])
def test_a_replica_started_from_a_snapshot_reads_only_the_records_after_it(
    kafka_bootstrap: str, tmp_path: Path, started_at: int
) -> None:
    topics = Topics.prefixed(f"s{uuid.uuid4().hex[:8]}.")
    ensure_topics(kafka_bootstrap, topics)
    engine = open_engine(f"sqlite:///{tmp_path}/store.db", catch_up=False)
    commands = [parse_command(c) for c in synthetic_population(100).commands]
    relay = Relay(engine.app, kafka_bootstrap, topics, batch_size=50)  # many transactions
    for start in range(0, len(commands), 40):
        engine.app.apply_all(commands[start:start + 40])
        while relay.publish():
            pass
    last = engine.app.position
    position = last if started_at == -1 else started_at
    index = AccessIndex()
    StoreFollower(engine.app, index).catch_up(until=position)  # as a snapshot would hold it

    replica = EventsFollower(index, kafka_bootstrap, topics)
    read: list[int] = []
    polled = replica.consumer.poll

    def counted(*args: object, **kwargs: object) -> dict:
        found = polled(*args, **kwargs)
        read.extend(r.offset for batch in found.values() for r in batch)
        return found

    replica.consumer.poll = counted  # type: ignore[method-assign]
    try:
        assert replica.catch_up() == last
        assert len(read) == last - position  # not one record at or before the snapshot
        engine.catch_up()
        now = datetime.now(UTC)
        for subject in engine.index.facts.subjects:
            assert replica.index.decide(subject, "fable-5", at=now) == engine.index.decide(
                subject, "fable-5", at=now)
    finally:
        replica.stop()
        relay.close()
        engine.close()


def _read_all(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        return list(consumer)
    finally:
        consumer.close()
