"""The decision log on a real Kafka broker: `interlock.decisions` keyed by subject, Avro
records that keep their seal, audit over the topic, and pruning by DeleteRecords."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

from consumers.decision_log import DECISIONS_TOPIC, KafkaDecisionLog
from interlock.engine import Engine
from interlock.http.app import create_app
from interlock.http.settings import ServeSettings
from projections.decision_log import LogQuery, audit, query
from schemas.codec import decode
from tests.decision_log_support import AFTER_ORDER, Replica, days_ago, family_of, world

pytestmark = pytest.mark.kafka


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = world(f"sqlite:///{tmp_path / 'store.db'}")
    yield engine
    engine.close()


@pytest.fixture
def prefix() -> str:
    return f"d{uuid.uuid4().hex[:8]}."


@pytest.fixture
def log(kafka_bootstrap: str, prefix: str) -> Iterator[KafkaDecisionLog]:
    log = KafkaDecisionLog(kafka_bootstrap, prefix + DECISIONS_TOPIC)
    yield log
    log.close()


def records(bootstrap: str, topic: str) -> list[tuple[int, bytes, str]]:
    """(partition, key, record name) of every record on the topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        found = []
        while any(consumer.position(p) < end[p] for p in partitions):
            for tp, batch in consumer.poll(timeout_ms=1000).items():
                found += [(tp.partition, r.key, decode(r.value)[0]) for r in batch]
        return found
    finally:
        consumer.close()


def test_served_decisions_travel_sealed_keyed_by_subject(engine: Engine, log: KafkaDecisionLog,
                                                         kafka_bootstrap: str) -> None:
    served = Replica(engine.index, log)
    subjects = [f"u-{n}" for n in range(12)] + ["u-de", "u-us"]
    written = served.serve(*[(s, "fable-5") for s in subjects])
    on_topic = records(kafka_bootstrap, log.topic)
    assert {name for _, _, name in on_topic} == {"decision_log_entry"}
    assert sorted(key for _, key, _ in on_topic) == sorted(s.encode() for s in subjects)
    assert len({partition for partition, _, _ in on_topic}) > 1, "keyed by subject"
    by_subject = {}
    for partition, key, _ in on_topic:
        assert by_subject.setdefault(key, partition) == partition
    assert sorted(log.select(LogQuery()), key=lambda e: e.seq) == written
    found, more = query(log, LogQuery(subject="u-de"))
    assert [e.entry_id for e in found] == [written[-2].entry_id] and not more
    report = audit(log, engine.index.facts)
    assert report.ok and report.agreed == len(subjects)


def test_audit_over_the_topic_names_a_missing_entry(engine: Engine,
                                                    log: KafkaDecisionLog) -> None:
    served = Replica(engine.index, log)
    sealed = served.chain.seal([served.pending(s, "fable-5") for s in ("u-us", "u-de", "u-us")],
                               family_of(engine.index))
    log.append([sealed[0], sealed[2]])  # the entry for u-de never reached the topic
    (problem,) = audit(log, engine.index.facts).problems
    assert (problem.problem, problem.seq) == ("removed", 2)
    assert sealed[2].entry_id in problem.detail


def test_pruning_deletes_records_and_keeps_the_chains_verifiable(
    engine: Engine, log: KafkaDecisionLog, kafka_bootstrap: str
) -> None:
    first, second = Replica(engine.index, log, "a:1"), Replica(engine.index, log, "b:2")
    first.serve(*[(f"u-{n}", "fable-5") for n in range(6)], served_at=days_ago(40))
    second.serve(*[(f"u-{n}", "opus-4.8") for n in range(6, 9)], served_at=days_ago(35))
    kept = first.serve(*[(f"u-{n}", "fable-5") for n in range(6)], served_at=days_ago(1))
    # old by its clock, but behind a young entry in its partition: a partition is deleted
    # only up to its first record that must stay
    late = second.serve(("u-0", "opus-4.8"), served_at=days_ago(33))
    result = log.prune(days_ago(30), "ops:1")
    assert result.removed == 9 and result.record is not None
    assert {g.chain: g.seq for g in result.record.pruned.genesis} == {
        first.chain.name: 6, second.chain.name: 3}
    remaining = sorted(log.select(LogQuery()), key=lambda e: (e.chain, e.seq))
    assert remaining == sorted([*kept, *late], key=lambda e: (e.chain, e.seq))
    report = audit(log, engine.index.facts)
    assert report.ok, report.to_json()
    assert len(records(kafka_bootstrap, log.topic)) == len(remaining) + 1  # + the prune record
    again = log.prune(days_ago(30), "ops:1")
    assert again.removed == 0 and again.record is None
    later = log.prune(days_ago(0.5), "ops:1")  # everything: the older prune record goes too
    assert later.removed == 7
    assert [name for _, _, name in records(kafka_bootstrap, log.topic)] == [
        "decision_log_entry"]
    assert audit(log, engine.index.facts).ok


def test_serve_logs_to_kafka_before_answering(tmp_path: Path, kafka_bootstrap: str,
                                              prefix: str) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    world(store).close()
    app = create_app(ServeSettings(store=store, decision_log="kafka", kafka=kafka_bootstrap,
                                   topic_prefix=prefix))
    with TestClient(app) as client:
        answer = client.post("/v1/decide", json={"subject": "u-de", "model": "fable-5",
                                                 "at": AFTER_ORDER.isoformat()})
        decision_id = answer.headers["x-interlock-decision-id"]
        log = KafkaDecisionLog(kafka_bootstrap, prefix + DECISIONS_TOPIC)
        try:
            (entry,) = log.select(LogQuery())
        finally:
            log.close()
        listed = client.get("/v1/decisions", params={"subject": "u-de"}).json()["decisions"]
    assert entry.entry_id == decision_id == listed[0]["decision_id"]
    assert entry.served.decision.effect == answer.json()["effect"] == "deny"
