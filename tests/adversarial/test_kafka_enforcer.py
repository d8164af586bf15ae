"""The enforcer's wire under attack: huge and awkward groups stay within the record bound and
land where keying by subject would put them; a new enforcer does not re-emit history; shard
arguments that make no sense are refused in one line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaProducer
from kafka.partitioner import DefaultPartitioner

from consumers.kafka import header
from consumers.packing import (
    COMPLETED,
    ENFORCEMENT_PARTITIONS,
    Cause,
    Packer,
    Partitioner,
    changes_of,
)
from domain.commands import parse_command
from domain.decision import Reason
from domain.limits import MAX_ENFORCEMENT_RECORD_BYTES, MAX_ID_CHARS
from interlock.demo import ORDER_COMMAND, synthetic_population
from interlock.engine import open_engine
from projections.enforcement import ChangeGroup
from schemas.codec import decode, encode
from tests.adversarial.kafka_support import (
    INTERLOCK,
    Deployment,
    as_json,
    deployed,
    produce,
    read_topic,
    wait_until,
)

NOW = datetime(2026, 11, 26, 22, 21, tzinfo=UTC)


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from deployed(kafka_bootstrap, tmp_path)


def group(subjects: list[str], kind: str = "access_revoked") -> ChangeGroup:
    return ChangeGroup(
        kind, "fable-5", "deny" if kind == "access_revoked" else "allow", None, True,
        (Reason("directive", "bis-2026-0417"), Reason("unknown_attribute", "citizenship")),
        NOW, 1834, NOW, NOW, NOW, False, tuple(subjects),
    )


@pytest.mark.parametrize(("subject", "count"), [
    ("u-{:06d}", 100_000),                              # the usual
    ("é" * (MAX_ID_CHARS - 6) + "{:06d}", 5_000),       # the longest id, 2 UTF-8 bytes a char
    ("{:d}", 150_000),                                  # the shortest
])
def test_a_huge_group_splits_within_the_bound_keeping_every_subject_once_in_its_partition(
    subject: str, count: int
) -> None:
    subjects = [subject.format(n) for n in range(count)]
    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    records = Packer(partition_of).records([group(subjects)])
    assert len(records) > ENFORCEMENT_PARTITIONS
    listed: dict[int, list[str]] = {p: [] for p in range(ENFORCEMENT_PARTITIONS)}
    for record in records:
        message = record.encode()
        assert len(message) <= MAX_ENFORCEMENT_RECORD_BYTES
        name, body = decode(message)
        assert name == "access_revoked" and body["subject"] == body["subjects"][0]
        assert all(partition_of(s) == record.partition for s in body["subjects"])
        listed[record.partition] += body["subjects"]
    for partition, found in listed.items():  # a group's subjects: in no particular order
        assert sorted(found) == sorted(s for s in subjects if partition_of(s) == partition)


class ThreePartitions:
    """What DefaultPartitioner asks of a cluster's metadata: one topic of the enforcement
    topic's partitions."""

    def topics(self) -> set[str]:
        return {"enforcement"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(ENFORCEMENT_PARTITIONS))

    available_partitions_for_topic = partitions_for_topic


@given(st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=50))
def test_the_partitioner_puts_a_subject_where_keying_by_it_would(subjects: list[str]) -> None:
    """kafka-python's DefaultPartitioner, given the subject's UTF-8 bytes as the key, picks the
    partition the Partitioner gives, one by one and through `split` alike."""
    keyed = {s: DefaultPartitioner().partition("enforcement", s, s.encode(), None, None,
                                                 ThreePartitions()) for s in subjects}
    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    assert {s: partition_of(s) for s in subjects} == keyed
    split = Partitioner(ENFORCEMENT_PARTITIONS).split(set(subjects))
    assert {s: p for p, listed in split for s in listed} == keyed


@pytest.mark.parametrize("subject", [
    lambda n: ("x" * (n % 40)) + f"{n}",  # longer and shorter ids mixed
    lambda n: f"u-{n:07d}",               # one length (counted at once)
    lambda n: f"ü-{n:07d}",               # one length, not ASCII
])
def test_a_huge_group_fills_each_record_before_starting_the_next(subject: Any) -> None:
    """Cut as late as the bound allows, by the packer's estimate of each subject's bytes (a
    little over what Avro takes): with the next subject, a record but a partition's last
    would come within a fifth of the bound."""
    subjects = [subject(n) for n in range(150_000)]
    records = Packer(Partitioner(ENFORCEMENT_PARTITIONS)).records([group(subjects)])
    by_partition: dict[int, list[dict]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record.record)
    for bodies in by_partition.values():
        assert len(bodies) > 1
        for body, following in pairwise(bodies):
            grown = {**body, "subjects": [*body["subjects"], following["subjects"][0]]}
            assert len(encode("access_revoked", grown)) > 0.8 * MAX_ENFORCEMENT_RECORD_BYTES


def test_a_completion_closes_every_owned_partition_even_one_without_changes() -> None:
    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    lonely = next(s for s in (f"u-{n}" for n in range(100)) if partition_of(s) == 2)
    packer = Packer(partition_of, owned=[0, 2], shard=0, shards=2)
    records = packer.records([group([lonely])])
    closing = packer.completions(Cause(1834, NOW), records, NOW)
    assert [(c.partition, c.record["records"], c.record["changes"]) for c in closing] == [
        (0, 0, 0), (2, 1, 1)]
    assert all(decode(c.encode())[0] == COMPLETED for c in closing)


@pytest.mark.kafka
def test_records_go_where_the_producer_would_send_a_record_keyed_by_the_subject(
    kafka_bootstrap: str, deployment: Deployment
) -> None:
    subjects = [f"u-{n:05d}" for n in range(300)] + ["é" * MAX_ID_CHARS, "", "0"]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        sent = [producer.send(deployment.topics.enforcement, key=s.encode(), value=b"x")
                for s in subjects]
        producer.flush()
        chosen = [future.get(timeout=30).partition for future in sent]
    finally:
        producer.close()
    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    assert chosen == [partition_of(s) for s in subjects]
    assert set(chosen) == set(range(ENFORCEMENT_PARTITIONS))


@pytest.mark.kafka
def test_a_new_enforcer_takes_the_history_on_the_topic_as_enforced(
    deployment: Deployment,
) -> None:
    engine = open_engine(deployment.store, catch_up=False)
    try:
        history = engine.app.apply_all(
            parse_command(c) for c in synthetic_population(200).commands).position
    finally:
        engine.close()
    deployment.start("relay")
    wait_until(lambda: len(read_topic(deployment.bootstrap, deployment.topics.events))
               == history, "the relay to publish the history")
    argv = [a for a in deployment.argv("enforce") if a != "--from-beginning"]
    with deployment.stderr_path("enforce").open("ab") as stderr:
        deployment.running["enforce"] = subprocess.Popen(argv, stderr=stderr)
    wait_until(lambda: "running" in deployment.stderr("enforce"), "the enforcer to start")
    deployment.start("intake")
    produce(deployment.bootstrap, deployment.topics.commands, [as_json(ORDER_COMMAND)])

    def completions() -> list:
        return [r for r in read_topic(deployment.bootstrap, deployment.topics.enforcement,
                                      partitions=ENFORCEMENT_PARTITIONS)
                if header(r, "type") == COMPLETED.encode()]

    wait_until(lambda: len(completions()) == ENFORCEMENT_PARTITIONS,
               "the order's completions", alive=lambda: deployment.alive("enforce"))
    records = read_topic(deployment.bootstrap, deployment.topics.enforcement,
                         partitions=ENFORCEMENT_PARTITIONS)
    positions = {int(header(r, "position")) for r in records}
    assert positions == {history + 1}, "nothing of the history, all of the order"
    decoded = [decode(r.value) for r in records]
    revoked = [c for name, body in decoded if name != COMPLETED for c in changes_of(name, body)]
    assert revoked and all(c["position"] == history + 1 for c in revoked)


@pytest.mark.parametrize(("shard", "why"), [
    ("2/2", "k must be at least 0 and less than N"),
    ("0/0", "k must be at least 0 and less than N"),
    ("-1/2", "is not k/N"),
    ("1", "is not k/N"),
    ("a/b", "is not k/N"),
    ("0/99999", "is not k/N"),
    (" 0/2", "is not k/N"),
])
def test_a_shard_that_makes_no_sense_is_refused_in_one_line(shard: str, why: str) -> None:
    done = subprocess.run([INTERLOCK, "enforce", "--kafka", "127.0.0.1:9", "--shard", shard],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("--shard: ") and why in done.stderr


@pytest.mark.kafka
def test_more_shards_than_partitions_is_refused_naming_the_topic(
    deployment: Deployment,
) -> None:
    done = subprocess.run([*deployment.argv("enforce"), "--shard", "0/4"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"interlock enforce: --shard 0/4: {deployment.topics.enforcement} has 3 partitions, "
        "so at most 3 shards"]


@pytest.mark.kafka
@pytest.mark.parametrize(("store", "why"), [
    ("bogus://x", "--store: 'bogus://x': unknown store"),
    ("sqlite:////nonexistent/store.db", "--snapshot: store sqlite:////nonexistent/store.db "
                                         "does not exist"),
])
def test_a_snapshot_start_on_a_store_that_cannot_be_read_is_refused_in_one_line(
    deployment: Deployment, tmp_path: Path, store: str, why: str,
) -> None:
    done = subprocess.run([*deployment.argv("enforce"), "--snapshot",
                           str(tmp_path / "index.snapshot"), "--store", store],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(why)


def test_changes_alike_but_for_their_valid_time_share_records() -> None:
    """A lift gives access back to each subject from its own valid time: thousands of groups
    of one subject each, which must not become thousands of records."""
    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    groups = [ChangeGroup("access_restored", "fable-5", "allow", None, False,
                          (Reason("entitled", "e-1"),), NOW - timedelta(minutes=n), 1900, None,
                          NOW, NOW, False, (f"u-{n}",)) for n in range(3_000)]
    records = Packer(partition_of).records(groups)
    assert len(records) == ENFORCEMENT_PARTITIONS
    changes = [c for r in records for c in changes_of(*decode(r.encode()))]
    assert sorted((c["subject"], c["at"]) for c in changes) == sorted(
        (g.subjects[0], g.at) for g in groups)
    early, late = (group(["u-1"]), group([s for s in (f"u-{n}" for n in range(2, 50))
                                          if partition_of(s) != partition_of("u-1")]))
    late = ChangeGroup(*(NOW + timedelta(hours=1) if f == "at" else getattr(late, f)
                         for f in ChangeGroup.__slots__))
    records = Packer(partition_of).records([early, late])
    changes = [c for r in records for c in changes_of(*decode(r.encode()))]
    assert {(c["subject"], c["at"]) for c in changes} == {
        ("u-1", NOW), *((s, NOW + timedelta(hours=1)) for s in late.subjects)}


@pytest.mark.parametrize("plan", ["plan-{}", "é" * (MAX_ID_CHARS - 12) + "{:06d}"])
def test_subjects_citing_their_own_plans_share_records_within_the_bound(plan: str) -> None:
    """A lift gives access back to subjects whose allows each cite a personal plan: one group
    listing each one's plan in `cites`, a few records within the bound (the longest plan ids
    too), and each subject's change read back with its own plan as the `entitled` reason."""
    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    subjects = [f"u-{n}" for n in range(20_000)]
    plans = [plan.format(n) for n in range(20_000)]
    reasons = (Reason("entitled", plans[0]), Reason("model_family", "fable"))
    lifted = ChangeGroup("access_restored", "fable-5", "allow", None, False, reasons, NOW, 1900,
                         None, NOW, NOW, False, tuple(subjects), tuple(plans))
    assert [c.reasons[0].ref for c in lifted.changes()] == plans
    records = Packer(partition_of).records([lifted])
    assert len(records) < 0.01 * len(subjects)
    changes = []
    for record in records:
        message = record.encode()
        assert len(message) <= MAX_ENFORCEMENT_RECORD_BYTES
        name, body = decode(message)
        assert body["reasons"][0]["ref"] == body["cites"][0], "reasons are the first's"
        assert all(partition_of(s) == record.partition for s in body["subjects"])
        changes += changes_of(name, body)
    assert sorted((c["subject"], c["reasons"][0]["ref"], c["reasons"][1]["ref"])
                  for c in changes) == sorted(
        (change.subject, change.reasons[0].ref, "fable") for change in lifted.changes())
