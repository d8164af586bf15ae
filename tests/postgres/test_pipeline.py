"""The Kafka pipeline (intake, relay, enforcer as separate processes) on a PostgreSQL store.

The tests are those of tests/integration/test_kafka_pipeline.py, imported here so that they
run again with the `deployment` fixture below: same processes and topics, the store a fresh
PostgreSQL database instead of an SQLite file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from consumers.kafka import Topics, ensure_topics
from tests.integration.test_kafka_pipeline import (
    Processes,
    test_garbage_goes_to_the_dead_letter_topic_and_good_commands_behind_it_apply,
    test_killed_processes_lose_and_repeat_nothing,
    test_the_order_revokes_exactly_the_pairs_the_rule_denies,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

__all__ = [
    "test_garbage_goes_to_the_dead_letter_topic_and_good_commands_behind_it_apply",
    "test_killed_processes_lose_and_repeat_nothing",
    "test_the_order_revokes_exactly_the_pairs_the_rule_denies",
]


@pytest.fixture
def deployment(
    kafka_bootstrap: str, fresh_postgres_db: str
) -> Iterator[tuple[Processes, Topics, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics.prefixed(prefix)
    ensure_topics(kafka_bootstrap, topics)
    processes = Processes(kafka_bootstrap, prefix, fresh_postgres_db)
    yield processes, topics, fresh_postgres_db
    processes.stop_all()
