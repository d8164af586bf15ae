"""The Kafka processes as an operator meets them: an unreachable broker is reported in one line
and a non-zero exit within 15 s; topics are created with the sizes the code relies on; two
deployments on one broker run side by side without fencing each other or sharing offsets."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from consumers.kafka import ensure_topics, header
from domain.limits import KAFKA_MAX_MESSAGE_BYTES
from interlock.engine import open_engine
from schemas.codec import decode
from tests.adversarial.kafka_support import (
    Deployment,
    as_json,
    deployed,
    produce,
    read_topic,
    stored_offset,
    wait_until,
)


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from deployed(kafka_bootstrap, tmp_path)


def committed(bootstrap: str, group: str, partition: TopicPartition) -> int | None:
    """The offset `group` has committed on `partition`, if any."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return consumer.committed(partition)
    finally:
        consumer.close()


def changed(deployment: Deployment) -> list:
    """The deployment's access_revoked / access_restored records (not their completions)."""
    return [record for record in read_topic(deployment.bootstrap, deployment.topics.enforcement,
                                            partitions=3)
            if header(record, "type") != b"enforcement_completed"]


def closed_port() -> str:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("name", ["intake", "relay", "enforce"])
def test_an_unreachable_broker_is_one_line_and_an_exit_within_15_s(
    name: str, tmp_path: Path
) -> None:
    nowhere = closed_port()
    argv = Deployment(nowhere, tmp_path).argv(name)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"interlock {name}: no Kafka broker answers at {nowhere} (waited 6 s)"
    ]


@pytest.mark.kafka
def test_topics_are_created_with_the_sizes_the_processes_rely_on(
    deployment: Deployment,
) -> None:
    topics = deployment.topics
    admin = KafkaAdminClient(bootstrap_servers=deployment.bootstrap)
    try:
        names = [topics.commands, topics.dlq, topics.events, topics.enforcement]
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": None})
             for name in names], config_filter="all")["topic"]
    finally:
        admin.close()
    assert described == {topics.commands: 1, topics.dlq: 1, topics.events: 1,
                         topics.enforcement: 3}
    assert {name: int(c["max.message.bytes"]["value"]) for name, c in configs.items()} == {
        name: KAFKA_MAX_MESSAGE_BYTES for name in names}


@pytest.mark.kafka
def test_two_deployments_on_one_broker_run_side_by_side(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    east, west = (Deployment(kafka_bootstrap, tmp_path) for _ in range(2))
    for deployment in (east, west):
        ensure_topics(kafka_bootstrap, deployment.topics)
        open_engine(deployment.store, catch_up=False).close()  # as compose's store-init does
    try:
        for deployment in (east, west):
            for name in ("relay", "enforce", "intake"):
                deployment.start(name)
        for round_ in range(3):
            for deployment, model in ((east, f"east-{round_}"), (west, f"west-{round_}")):
                produce(kafka_bootstrap, deployment.topics.commands, [
                    as_json({"type": "register_model", "model": model, "family": "f"}),
                    as_json({"type": "grant_entitlement", "entitlement": f"e-{model}",
                             "grantee": {"subject": f"u-{model}"}, "models": [model],
                             "valid_from": "2026-01-01T00:00:00+00:00"}),
                ])
        for deployment in (east, west):
            def everyone_running(d: Deployment = deployment) -> bool:
                return all(d.alive(name) for name in ("relay", "enforce", "intake"))

            wait_until(lambda d=deployment: stored_offset(d.store, d.topics) == 6,
                       "intake to apply every command", alive=everyone_running)
            wait_until(lambda d=deployment: len(read_topic(d.bootstrap, d.topics.events)) == 6,
                       "the relay to publish every event", alive=everyone_running)
            wait_until(lambda d=deployment: len(changed(d)) == 3,
                       "the enforcer to publish every grant", alive=everyone_running)
        for deployment, other in ((east, "west"), (west, "east")):
            grants = changed(deployment)
            subjects = sorted(s for record in grants
                              for s in decode(record.value)[1]["subjects"])
            assert len(subjects) == 3 and not any(other in s for s in subjects)
            assert all(header(record, "type") == b"access_restored" for record in grants)
            assert all(deployment.alive(name) for name in ("relay", "enforce", "intake"))

        for deployment in (east, west):
            events = TopicPartition(deployment.topics.events, 0)
            assert committed(kafka_bootstrap, deployment.topics.name("enforcer"), events) == 6
            assert committed(kafka_bootstrap, "interlock-enforcer", events) is None
    finally:
        east.stop_all()
        west.stop_all()
