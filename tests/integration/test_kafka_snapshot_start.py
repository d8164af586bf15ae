"""`interlock enforce --snapshot` on a real broker: a fresh shard started from an index snapshot
enforces what a shard that replayed the events topic does, on a topic that carries only the
events after the snapshot; a snapshot of another store, or one holding events a restarted shard
has not enforced yet, is ignored (logged) and the topic replayed, so nothing is skipped."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from consumers.kafka import Topics, ensure_topics
from consumers.packing import COMPLETED, ENFORCEMENT_PARTITIONS, changes_of
from interlock.demo import synthetic_population
from interlock.engine import open_engine
from projections.snapshot import write_snapshot
from schemas.codec import decode
from tests.integration.test_kafka_shards import (
    Running,
    apply,
    change_key,
    enforced_to,
    random_waves,
    read_all,
    running,  # noqa: F401  (the fixture)
    settled,
)

pytestmark = pytest.mark.kafka


def snapshot_of(store: str, path: Path) -> int:
    engine = open_engine(store, catch_up=True)
    try:
        return write_snapshot(engine.index, engine.app.recorder, path).position
    finally:
        engine.close()


def published(bootstrap: str, topics: Topics) -> tuple[Counter[Any], dict[Any, list[Any]]]:
    """Every change on the enforcement topic (without its emitted time), and each pair's in
    order."""
    settled(bootstrap, topics.enforcement, ENFORCEMENT_PARTITIONS)
    found: Counter[Any] = Counter()
    sequences: dict[Any, list[Any]] = defaultdict(list)
    for record in read_all(bootstrap, topics.enforcement, ENFORCEMENT_PARTITIONS):
        name, body = decode(record.value)
        if name != COMPLETED:
            for change in changes_of(name, body):
                key = change_key(name, change)
                found[key] += 1
                sequences[change["subject"], change["model"]].append(key)
    return found, sequences


def started(processes: Running, label: str, timeout: float = 120) -> str:
    """The stderr of the process once it reports running (its starting point committed)."""
    path = processes.directory / f"{label}.stderr"
    deadline = time.monotonic() + timeout
    while "running (" not in path.read_text(errors="replace"):
        processes.alive()
        assert time.monotonic() < deadline, f"{label} did not start"
        time.sleep(0.2)
    return path.read_text(errors="replace")


def test_a_shard_started_from_a_snapshot_enforces_what_a_replaying_shard_does(
    kafka_bootstrap: str, tmp_path: Path, running: Running  # noqa: F811
) -> None:
    rng = random.Random(5)
    population = synthetic_population(60)
    subjects = sorted({c["subject"] for c in population.commands if "subject" in c})
    waves = random_waves(rng, subjects, 4, 40)
    store, other = f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/other.db"
    cut = apply(store, [*population.commands, *waves[0]])
    assert apply(other, [*population.commands, *waves[0]]) == cut  # its events differ in time
    assert snapshot_of(store, tmp_path / "store.snapshot") == cut
    snapshot_of(other, tmp_path / "other.snapshot")

    replay, snap = (Topics.prefixed(f"p{uuid.uuid4().hex[:8]}.") for _ in range(2))
    for topics in (replay, snap):
        ensure_topics(kafka_bootstrap, topics)
    writer = open_engine(store, catch_up=False)  # snap's topic: only what follows the snapshot
    writer.app.recorder.insert_tracking(Tracking(f"relay:{snap.events}", cut))
    writer.close()
    for topics in (replay, snap):
        running.start(f"relay-{topics.prefix}", "relay", "--kafka", kafka_bootstrap,
                      "--topic-prefix", topics.prefix, "--store", store)
    enforced_to(kafka_bootstrap, replay, [], cut, running)

    def enforcer(topics: Topics, label: str, snapshot: str) -> str:
        running.start(label, "enforce", "--kafka", kafka_bootstrap, "--topic-prefix",
                      topics.prefix, "--snapshot", str(tmp_path / snapshot), "--store", store)
        return started(running, label)

    log = enforcer(replay, "replaying", "other.snapshot")
    assert "another store" in log and "started from the snapshot" not in log, log
    assert f"replaying {replay.events}" in log, "the fallback names what is replayed"
    log = enforcer(snap, "snap", "store.snapshot")
    assert f"started from the snapshot at position {cut}" in log, log

    apply(store, waves[1])
    position = apply(store, waves[2])
    enforced_to(kafka_bootstrap, replay, [replay.name("enforcer")], position, running)
    enforced_to(kafka_bootstrap, snap, [snap.name("enforcer")], position, running)
    expected, sequences = published(kafka_bootstrap, replay)
    assert expected, "the random stream must change someone's access"
    assert published(kafka_bootstrap, snap) == (expected, sequences)
    enforced = position

    # Restarted with a snapshot newer than what it enforced: the snapshot would swallow
    # waves[3] unenforced, so it is ignored and the topic replayed.
    running.kill("replaying")
    position = apply(store, waves[3])
    assert snapshot_of(store, tmp_path / "newer.snapshot") == position
    enforced_to(kafka_bootstrap, replay, [], position, running)
    log = enforcer(replay, "restarted", "newer.snapshot")
    assert "not enforced" in log and "started from the snapshot" not in log, log
    enforced_to(kafka_bootstrap, replay, [replay.name("enforcer")], position, running)
    enforced_to(kafka_bootstrap, snap, [snap.name("enforcer")], position, running)
    expected, sequences = published(kafka_bootstrap, replay)
    assert max(expected.values()) == 1, "a change was published twice"
    assert any(key[8] > enforced for key in expected), "waves[3] must change someone's access"
    assert published(kafka_bootstrap, snap) == (expected, sequences)
