"""Enforcer shards on a real broker: on random command streams, two shards (`enforce --shard
k/2`) publish exactly the changes one enforcer does, each change in the partition keying by
its subject would choose, each (subject, model)'s changes in the same order, nothing twice,
even when one shard is SIGKILLed mid-stream and restarted."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from consumers.kafka import Topics, ensure_topics, header
from consumers.packing import COMPLETED, ENFORCEMENT_PARTITIONS, Partitioner, changes_of
from domain.commands import parse_command
from interlock.demo import MODELS, synthetic_population
from interlock.engine import open_engine
from schemas.codec import decode

pytestmark = pytest.mark.kafka

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
COUNTRIES = ["US", "DE", "FR", "CN", "IN", "MX"]
ORGS = ["interlock-ai", "acme", "globex", "initech"]


def random_waves(rng: random.Random, subjects: list[str], waves: int, size: int
                 ) -> list[list[dict[str, Any]]]:
    """Attestations, orders and lifts in a random order; every time lies in the past, so
    what each enforcer decides does not depend on when it runs."""
    issued: list[str] = []
    found = []
    for wave in range(waves):
        commands: list[dict[str, Any]] = []
        for n in range(size):
            day = f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}T00:00:00+00:00"
            pick = rng.random()
            if pick < 0.4:
                commands.append({"type": "attest_nationality", "subject": rng.choice(subjects),
                                 "citizenships": [rng.choice(COUNTRIES)], "residencies": [],
                                 "valid_from": day, "source": f"kyc-{wave}-{n}"})
            elif pick < 0.7:
                commands.append({"type": "attest_employer", "subject": rng.choice(subjects),
                                 "org": rng.choice(ORGS), "valid_from": day,
                                 "source": f"hr-{wave}-{n}"})
            elif pick < 0.85 or not issued:
                name = f"d-{wave}-{n}"
                issued.append(name)
                commands.append({
                    "type": "issue_directive", "directive": name, "authority": "BIS",
                    "reference": "letter", "received_at": day,
                    "models": rng.sample(sorted(MODELS), rng.randint(1, 2)),
                    "subjects": {"citizenship": {"none_of": rng.sample(COUNTRIES, 2)}},
                    "effect": "deny", "disclose": rng.random() < 0.5, "on_unknown": "apply",
                })
            else:
                commands.append({"type": "lift_directive",
                                 "directive": issued.pop(rng.randrange(len(issued)))})
        found.append(commands)
    return found


class Running:
    """`interlock` processes of the test, stderr to files, killed or stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, label: str, *argv: str) -> None:
        with (self.directory / f"{label}.stderr").open("ab") as stderr:
            self.processes[label] = subprocess.Popen([INTERLOCK, *argv], stderr=stderr)

    def kill(self, label: str) -> None:
        process = self.processes.pop(label)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def alive(self) -> None:
        for label, process in self.processes.items():
            if process.poll() is not None:
                stderr = (self.directory / f"{label}.stderr").read_text(errors="replace")
                pytest.fail(f"{label} exited {process.returncode}: {stderr}")

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    found = Running(tmp_path)
    yield found
    found.stop()


def apply(store: str, commands: list[dict[str, Any]]) -> int:
    engine = open_engine(store, catch_up=False, create=True)
    try:
        return engine.app.apply_all(parse_command(c) for c in commands).position
    finally:
        engine.close()


def read_all(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every committed record of the topic now, partition by partition, in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed")
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(assigned)
        found: dict[int, list[Any]] = defaultdict(list)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            assert time.monotonic() < deadline, f"{topic}: cannot read to the end"
            for tp, batch in consumer.poll(500).items():
                found[tp.partition] += batch
        return [record for p in range(partitions) for record in found[p]]
    finally:
        consumer.close()


def enforced_to(bootstrap: str, topics: Topics, groups: list[str], position: int,
                running: Running, timeout: float = 180) -> None:
    """Waits until the relay has published `position` and every group has committed past
    it."""
    partition = TopicPartition(topics.events, 0)
    deadline = time.monotonic() + timeout
    while True:
        running.alive()
        assert time.monotonic() < deadline, f"{topics.prefix}: not enforced to {position}"
        events = read_all(bootstrap, topics.events, 1)
        at = [r.offset for r in events if int(header(r, "position")) == position]
        if at and all(_committed(bootstrap, group, partition) > at[0] for group in groups):
            return
        time.sleep(0.5)


def settled(bootstrap: str, topic: str, partitions: int, timeout: float = 60) -> None:
    """Waits until no transaction is open on the topic (its last stable offsets reach its
    ends): a group's committed offset can be seen before the markers of the transaction that
    committed it reach the data partitions."""
    assigned = [TopicPartition(topic, p) for p in range(partitions)]
    deadline = time.monotonic() + timeout
    while True:
        ends = {}
        for isolation in ("read_committed", "read_uncommitted"):
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                     enable_auto_commit=False, isolation_level=isolation)
            try:
                ends[isolation] = consumer.end_offsets(assigned)
            finally:
                consumer.close()
        if ends["read_committed"] == ends["read_uncommitted"]:
            return
        assert time.monotonic() < deadline, f"{topic}: a transaction stays open"
        time.sleep(0.5)


def _committed(bootstrap: str, group: str, partition: TopicPartition) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return consumer.committed(partition) or 0
    finally:
        consumer.close()


def change_key(name: str, change: dict[str, Any]) -> tuple[Any, ...]:
    """A change without the time it was emitted at (which differs between enforcers)."""
    return (name, change["subject"], change["model"], change["effect"], change["route_to"],
            change["disclosed"], tuple((r["code"], r["ref"]) for r in change["reasons"]),
            change["at"], change["position"], change["received_at"], change["recorded_at"],
            change.get("first"))


@pytest.mark.parametrize("seed", [11, 29])
def test_two_shards_publish_what_one_enforcer_does_across_a_sigkill(
    seed: int, kafka_bootstrap: str, tmp_path: Path, running: Running
) -> None:
    rng = random.Random(seed)
    population = synthetic_population(60)
    subjects = sorted({c["subject"] for c in population.commands if "subject" in c})
    waves = random_waves(rng, subjects, 4, 40)
    store = f"sqlite:///{tmp_path}/store.db"
    apply(store, [*population.commands, *waves[0]])

    one, two = (Topics.prefixed(f"s{uuid.uuid4().hex[:8]}.") for _ in range(2))
    for topics in (one, two):
        ensure_topics(kafka_bootstrap, topics)
        running.start(f"relay-{topics.prefix}", "relay", "--kafka", kafka_bootstrap,
                      "--topic-prefix", topics.prefix, "--store", store)

    def enforcer(topics: Topics, label: str, *shard: str) -> None:
        running.start(label, "enforce", "--kafka", kafka_bootstrap, "--topic-prefix",
                      topics.prefix, "--from-beginning", *shard)

    enforcer(one, "single")
    enforcer(two, "shard-0", "--shard", "0/2")
    enforcer(two, "shard-1", "--shard", "1/2")
    shard_1 = two.name("enforcer-1-of-2")
    enforced_to(kafka_bootstrap, two, [shard_1], apply(store, waves[1]), running)
    apply(store, waves[2])
    time.sleep(rng.uniform(0.0, 1.0))
    running.kill("shard-1")  # it has published before: now mid-transaction, or idle
    position = apply(store, waves[3])
    enforcer(two, "shard-1", "--shard", "1/2")
    enforced_to(kafka_bootstrap, one, [one.name("enforcer")], position, running)
    enforced_to(kafka_bootstrap, two, [two.name("enforcer-0-of-2"), shard_1], position, running)

    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    published: dict[str, Counter[tuple[Any, ...]]] = {}
    sequences: dict[str, dict[tuple[str, str], list[tuple[Any, ...]]]] = {}
    completions: dict[str, list[dict[str, Any]]] = {}
    for label, topics in (("one", one), ("two", two)):
        settled(kafka_bootstrap, topics.enforcement, ENFORCEMENT_PARTITIONS)
        records = read_all(kafka_bootstrap, topics.enforcement, ENFORCEMENT_PARTITIONS)
        published[label], sequences[label], completions[label] = Counter(), defaultdict(list), []
        for record in records:
            name, body = decode(record.value)
            if name == COMPLETED:
                assert body["partition"] == record.partition
                completions[label].append(body)
                continue
            for change in changes_of(name, body):
                assert partition_of(change["subject"]) == record.partition
                key = change_key(name, change)
                published[label][key] += 1
                sequences[label][change["subject"], change["model"]].append(key)

    assert published["one"], "the random stream must change someone's access"
    assert published["two"] == published["one"]
    assert max(published["two"].values()) == 1, "a change was published twice"
    assert sequences["two"] == sequences["one"], "each pair's changes in the same order"
    closed = Counter((c["position"], c["moment"], c["partition"]) for c in completions["two"])
    assert max(closed.values()) == 1, "a cause was closed twice in a partition"
    assert all(c["partition"] % 2 == c["shard"] and c["shards"] == 2
               for c in completions["two"]), "each shard writes to its own partitions only"
    closing = {label: {(c["position"], c["moment"], c["partition"], c["records"], c["changes"])
                       for c in completions[label]} for label in published}
    assert closing["two"] <= closing["one"]
    assert {c for c in closing["one"] if c[3] > 0} <= closing["two"], (
        "every partition a cause changed is closed by its shard")
