"""The kill switch through a real Kafka broker: intake, relay and enforcer as separate processes.

A population is already in the store; the 5:21 order is published onto the commands topic; the
enforcement topic must then carry a revocation for exactly the (subject, model) pairs the rule
denies. Processes are SIGKILLed and restarted mid-stream without losing or repeating anything,
and garbage lands in the dead-letter topic while the good commands behind it are applied.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumers.kafka import Topics, ensure_topics, header
from consumers.packing import ENFORCEMENT_PARTITIONS, Partitioner, changes_of
from domain.commands import parse_command
from domain.decision import NO_CONTEXT, judge
from interlock.demo import MODELS, ORDER_COMMAND, synthetic_population
from interlock.engine import open_engine
from schemas.codec import decode
from schemas.records import decode_event, encode_command

pytestmark = pytest.mark.kafka

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
POPULATION = 400


class Processes:
    """The three Kafka processes of one deployment, started and killed like a real operator."""

    def __init__(self, bootstrap: str, prefix: str, store: str) -> None:
        self.args = {"--kafka": bootstrap, "--topic-prefix": prefix}
        self.store = store
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *names: str) -> None:
        for name in names:
            command = [INTERLOCK, name, *(x for kv in self.args.items() for x in kv)]
            if name != "enforce":
                command += ["--store", self.store]
            else:  # these tests read the history's grants too
                command += ["--from-beginning"]
            self.running[name] = subprocess.Popen(command, stderr=subprocess.PIPE)

    def kill(self, *names: str) -> None:
        for name in names:
            process = self.running.pop(name)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.running.values():
            process.terminate()
        for name, process in self.running.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                pytest.fail(f"{name} did not stop on SIGTERM")
        self.running.clear()


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[Processes, Topics, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics.prefixed(prefix)
    ensure_topics(kafka_bootstrap, topics)
    store = f"sqlite:///{tmp_path}/store.db"
    processes = Processes(kafka_bootstrap, prefix, store)
    yield processes, topics, store
    processes.stop_all()


def load_population(store: str) -> None:
    engine = open_engine(store, catch_up=False)
    try:
        engine.app.apply_all(parse_command(c) for c in synthetic_population(POPULATION).commands)
    finally:
        engine.close()


def revoked_by_rule(store: str, position: int, at: datetime) -> set[tuple[str, str]]:
    """Brute force over every subject and model: allowed before `position`, not after."""
    engine = open_engine(store)
    try:
        facts = engine.index.facts
        return {
            (subject, model)
            for subject in facts.subjects
            for model in MODELS
            if judge(facts, subject, model, at, position - 1, NO_CONTEXT).effect == "allow"
            and judge(facts, subject, model, at, position, NO_CONTEXT).effect != "allow"
        }
    finally:
        engine.close()


def consume(bootstrap: str, topic: str, until: Callable[[list], bool], timeout: float = 60.0
            ) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", isolation_level="read_committed",
                             enable_auto_commit=False)
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while not until(records):
            if time.monotonic() > deadline:
                pytest.fail(f"{topic}: gave up after {timeout}s with {len(records)} records")
            for batch in consumer.poll(500).values():
                records += batch
        time.sleep(1.0)
        for batch in consumer.poll(500).values():
            records += batch
        return records
    finally:
        consumer.close()


def publish(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def changes(records: list) -> list[tuple[Any, str, dict]]:
    """Each packed record's changes, one per subject, with the record and its name."""
    found = []
    for record in records:
        name, body = decode(record.value)
        if name != "enforcement_completed":
            found += ((record, name, change) for change in changes_of(name, body))
    return found


def store_position(store: str) -> int:
    engine = open_engine(store, catch_up=False)
    try:
        return engine.app.position
    finally:
        engine.close()


def wait_for_position(store: str, position: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while store_position(store) < position:
        if time.monotonic() > deadline:
            pytest.fail(f"store stuck at {store_position(store)}, expected {position}")
        time.sleep(0.2)


def test_the_order_revokes_exactly_the_pairs_the_rule_denies(
    kafka_bootstrap: str, deployment: tuple[Processes, Topics, str]
) -> None:
    processes, topics, store = deployment
    load_population(store)
    processes.start("relay", "enforce", "intake")
    before = store_position(store)

    order = parse_command(ORDER_COMMAND)
    publish(kafka_bootstrap, topics.commands, [(b"bis-2026-0417", encode_command(order))])
    wait_for_position(store, before + 1)
    expected = revoked_by_rule(store, before + 1, datetime.now(UTC))
    assert expected, "the population must contain subjects the order cuts off"

    def caused_by_order(records: list) -> list:
        """A new enforcer told --from-beginning enforces history too: grants come first."""
        return [c for c in changes(records) if c[2]["position"] == before + 1]

    def completed(records: list) -> list:
        return [body for name, body in (decode(r.value) for r in records)
                if name == "enforcement_completed" and body["position"] == before + 1]

    everything = consume(
        kafka_bootstrap, topics.enforcement,
        lambda r: len(completed(r)) >= ENFORCEMENT_PARTITIONS,
    )
    found = caused_by_order(everything)
    grants = [(name, body) for _, name, body in changes(everything)
              if body["position"] <= before]
    assert grants and all(name == "access_restored" and body["first"] for name, body in grants)
    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    revoked = Counter()
    for record, name, body in found:
        assert record.partition == partition_of(body["subject"]), "as keyed by subject"
        assert name == "access_revoked" and body["position"] == before + 1
        assert body["received_at"] == datetime.fromisoformat(ORDER_COMMAND["received_at"])
        assert body["at"] == body["received_at"], "the valid time the order took effect"
        revoked[body["subject"], body["model"]] += 1
    assert set(revoked) == expected
    assert max(revoked.values()) == 1
    assert {model for _, model in revoked} <= {"fable-5", "mythos-5"}
    closing = completed(everything)
    assert sorted(c["partition"] for c in closing) == list(range(ENFORCEMENT_PARTITIONS))
    for completion in closing:  # the last of the order's records in its partition
        partition = completion["partition"]
        here = [r for r in everything
                if r.partition == partition and int(header(r, "position")) == before + 1]
        assert decode(here[-1].value)[0] == "enforcement_completed"
        assert completion["records"] == len(here) - 1
        assert completion["changes"] == sum(r.partition == partition for r, _, _ in found)


def test_killed_processes_lose_and_repeat_nothing(
    kafka_bootstrap: str, deployment: tuple[Processes, Topics, str]
) -> None:
    processes, topics, store = deployment
    load_population(store)
    base = store_position(store)
    processes.start("relay", "enforce", "intake")
    subjects = [f"u-{n:05d}" for n in range(POPULATION)]
    waves = [
        [{"type": "attest_location", "subject": s, "country": "FR",
          "valid_from": "2026-11-26T08:00:00+00:00", "source": f"wave-{wave}"}
         for s in subjects[wave * 100:(wave + 1) * 100]]
        for wave in range(3)
    ]
    waves[1].append(dict(ORDER_COMMAND))
    for number, wave in enumerate(waves):
        publish(kafka_bootstrap, topics.commands,
                [(c["subject"].encode() if "subject" in c else None,
                  encode_command(parse_command(c))) for c in wave])
        time.sleep(0.3 * number)
        processes.kill("intake", "relay", "enforce")
        processes.start("intake", "relay", "enforce")
    applied = sum(len(wave) for wave in waves)
    wait_for_position(store, base + applied)
    time.sleep(2.0)
    assert store_position(store) == base + applied, "a command was applied twice"

    events = consume(kafka_bootstrap, topics.events,
                     lambda r: len(r) >= base + applied)
    published = [int(header(record, "position")) for record in events]
    assert published == list(range(1, base + applied + 1))
    assert decode_event(events[-1].value).timestamp is not None

    order_position = next(
        int(header(r, "position")) for r in events
        if type(decode_event(r.value)).__qualname__ == "Directive.Issued"
    )
    expected = revoked_by_rule(store, order_position, datetime.now(UTC))
    records = consume(kafka_bootstrap, topics.enforcement,
                      lambda r: sum(c[2]["position"] == order_position
                                    for c in changes(r)) >= len(expected))
    revocations = Counter(
        (body["subject"], body["model"])
        for _, _, body in changes(records)
        if body["position"] == order_position
    )
    assert set(revocations) == expected
    assert max(revocations.values()) == 1, "a revocation was published twice"


def test_garbage_goes_to_the_dead_letter_topic_and_good_commands_behind_it_apply(
    kafka_bootstrap: str, deployment: tuple[Processes, Topics, str]
) -> None:
    processes, topics, store = deployment
    processes.start("intake")
    good = [
        {"type": "register_model", "model": "fable-5", "family": "fable"},
        {"type": "register_model", "model": "opus-4.8", "family": "opus"},
    ]
    messages = [
        (b"x", b"\x00\x01garbage"),
        (b"fable-5", encode_command(parse_command(good[0]))),
        (b"y", json.dumps({"type": "register_model", "model": "m", "family": "f",
                           "colour": "red"}).encode()),
        (b"z", json.dumps({"type": "withdraw_model", "model": "ghost-1"}).encode()),
        (b"opus-4.8", json.dumps(good[1]).encode()),
    ]
    # one partition, so that "behind" means behind
    publish_to_partition = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for key, value in messages:
        publish_to_partition.send(topics.commands, key=key, value=value, partition=0)
    publish_to_partition.flush()
    publish_to_partition.close()

    dead = consume(kafka_bootstrap, topics.dlq, lambda r: len(r) >= 3)
    assert [record.value for record in dead] == [messages[0][1], messages[2][1], messages[3][1]]
    errors = [header(record, "error").decode() for record in dead]
    assert "magic" in errors[0] or "neither" in errors[0]
    assert errors[1].startswith("colour: unknown field")
    assert errors[2].startswith("model: unknown model")
    for record, (offset_header, partition_header) in zip(
        dead, [(header(r, "offset"), header(r, "partition")) for r in dead], strict=True
    ):
        assert header(record, "topic").decode() == topics.commands
        assert partition_header == b"0" and offset_header is not None
    wait_for_position(store, 2)
    engine = open_engine(store)
    try:
        assert set(engine.index.facts.models) == {"fable-5", "opus-4.8"}
    finally:
        engine.close()
