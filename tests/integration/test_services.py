"""The service fixtures give real servers: a message and a row make the round trip.

These guard the test infrastructure itself, so a broken fixture shows up here first rather
than as puzzling failures in the intake/relay/enforcer or PostgreSQL store tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest


@pytest.mark.kafka
def test_kafka_round_trip(kafka_bootstrap: str, kafka_topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]

    payload = uuid.uuid4().bytes
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(kafka_topic, key=b"k", value=payload).get(timeout=30)
        producer.flush(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        kafka_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=30000,
    )
    try:
        received = next(iter(consumer))
    finally:
        consumer.close()
    assert (received.key, received.value) == (b"k", payload)


@pytest.mark.kafka
def test_kafka_topics_are_fresh(new_kafka_topic: Callable[..., str]) -> None:
    first, second = new_kafka_topic(), new_kafka_topic(partitions=3)
    assert first != second


@pytest.mark.postgres
def test_postgres_round_trip(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TEMP TABLE probe (id int PRIMARY KEY, note text NOT NULL)")
        conn.execute("INSERT INTO probe VALUES (%s, %s)", (1, "interlock"))
        row = conn.execute("SELECT id, note FROM probe").fetchone()
    assert row == (1, "interlock")


@pytest.mark.postgres
def test_fresh_postgres_db_is_isolated(fresh_postgres_db: str, postgres_url: str) -> None:
    import psycopg

    assert fresh_postgres_db != postgres_url
    with psycopg.connect(fresh_postgres_db) as conn:
        conn.execute("CREATE TABLE events (position bigint PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO events VALUES (1, 'registered')")
        conn.commit()
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone() or (0,)
        assert count == 1
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT to_regclass('public.events')").fetchone()
    assert found == (None,)
