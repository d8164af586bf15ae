"""The relay attacked with events it cannot publish: it publishes every event before one, then
stops naming its position in one line (exit 1), and on every restart stops there again, never
skipping it and never publishing anything twice."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from consumers.kafka import header, message_limit
from consumers.relay import Relay, Unpublishable
from domain.aggregates import Subject
from domain.application import Interlock
from domain.commands import parse_command
from domain.limits import KAFKA_MAX_MESSAGE_BYTES
from interlock.config import store_environment
from tests.adversarial.kafka_support import Deployment, deployed, read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from deployed(kafka_bootstrap, tmp_path)


def register(app: Interlock, model: str) -> None:
    app.apply(parse_command({"type": "register_model", "model": model, "family": "f"}))


def write_old_attestation(app: Interlock, subject: str, evidence_bytes: int) -> int:
    """Writes an attestation with an evidence of that size straight through the recorder, as a
    store written before commands were bounded may hold; returns its position."""
    now = datetime.now(UTC)
    aggregate = Subject.register(subject, now)
    aggregate.attest(Subject.NationalityAttested, now, valid_from=now, valid_until=None,
                     source="old-kyc", evidence="x" * evidence_bytes, citizenships=["DE"],
                     residencies=[])
    app.recorder.insert_events([app.mapper.to_stored_event(e)
                                for e in aggregate.collect_events()])
    return app.position


def published(deployment: Deployment) -> list[int]:
    return [int(header(r, "position"))
            for r in read_topic(deployment.bootstrap, deployment.topics.events)]


def test_the_relay_stops_at_an_event_too_large_to_publish_naming_its_position(
    deployment: Deployment,
) -> None:
    app = Interlock(env=store_environment(deployment.store))
    register(app, "fable-5")
    huge = write_old_attestation(app, "u-2", 2 * 1024 * 1024)
    register(app, "mythos-5")
    app.close()

    for _run in range(2):
        done = subprocess.run(deployment.argv("relay"), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"interlock relay: cannot publish position {huge} "
                               "(Subject.NationalityAttested): "), done.stderr
        assert f"over the {KAFKA_MAX_MESSAGE_BYTES:,}-byte limit" in last
        assert published(deployment) == list(range(1, huge))


def test_a_record_the_broker_refuses_stops_the_relay_after_the_ones_before_it(
    deployment: Deployment,
) -> None:
    app = Interlock(env=store_environment(deployment.store))
    register(app, "fable-5")
    relay = Relay(app, deployment.bootstrap, deployment.topics)
    try:
        assert relay.publish() == 1
        # The topic's limit shrinks under the running relay, which still sends up to the old one.
        admin = KafkaAdminClient(bootstrap_servers=deployment.bootstrap)
        try:
            admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, deployment.topics.events,
                configs={"max.message.bytes": "2000"})])
        finally:
            admin.close()
        assert message_limit(deployment.bootstrap, deployment.topics,
                             deployment.topics.events) == 2000
        register(app, "mythos-5")
        refused = write_old_attestation(app, "u-2", 5_000)
        register(app, "opus-4.8")
        with pytest.raises(Unpublishable) as stopped:
            relay.publish()
    finally:
        relay.close()
    assert stopped.value.position == refused
    assert "the broker refused it (MessageSizeTooLargeError)" in str(stopped.value)
    assert published(deployment) == list(range(1, refused))
    assert relay.position == refused - 1
