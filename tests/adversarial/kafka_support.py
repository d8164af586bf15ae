"""A deployment of Interlock's Kafka processes on the test broker, for the adversarial tests.

Each test gets its own topic prefix and store, so tests sharing the broker never see each
other's records. Processes are real `interlock` subprocesses with their stderr in a file (a
pipe could fill up and stall a process that reports every refusal).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.kafka import Topics, ensure_topics, header
from interlock.engine import open_engine

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


@dataclass
class Deployment:
    """One deployment: a topic prefix, a store, and the processes started on them."""

    bootstrap: str
    directory: Path
    prefix: str = field(default_factory=lambda: f"a{uuid.uuid4().hex[:8]}.")
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def topics(self) -> Topics:
        return Topics.prefixed(self.prefix)

    @property
    def store(self) -> str:
        return f"sqlite:///{self.directory}/{self.prefix}db"

    def argv(self, name: str, bootstrap: str | None = None) -> list[str]:
        argv = [INTERLOCK, name, "--kafka", bootstrap or self.bootstrap,
                "--topic-prefix", self.prefix]
        if name == "enforce":  # these tests read the grants of the history too
            return [*argv, "--from-beginning"]
        return [*argv, "--store", self.store]

    def stderr_path(self, name: str) -> Path:
        return self.directory / f"{self.prefix}{name}.stderr"

    def start(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with self.stderr_path(name).open("ab") as stderr:
            process = subprocess.Popen(self.argv(name), stderr=stderr,
                                       env={**os.environ, **(env or {})})
        self.running[name] = process
        return process

    def stderr(self, name: str) -> str:
        return self.stderr_path(name).read_text(errors="replace")

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def alive(self, name: str) -> bool:
        return self.running[name].poll() is None

    def stop_all(self) -> None:
        for process in self.running.values():
            process.terminate()
        for process in self.running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.running.clear()


def deployed(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    """A fresh deployment with its topics, its processes stopped afterwards: the body of each
    test module's `deployment` fixture."""
    found = Deployment(kafka_bootstrap, tmp_path)
    ensure_topics(kafka_bootstrap, found.topics)
    yield found
    found.stop_all()


def produce(bootstrap: str, topic: str, values: list[bytes | None],
            keys: list[bytes | None] | None = None) -> list[int]:
    """Sends each value (in order, to partition 0 unless keyed) and returns their offsets."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    try:
        futures = [
            producer.send(topic, key=key, value=value, partition=None if keys else 0)
            for key, value in zip(keys or [b"k"] * len(values), values, strict=True)
        ]
        producer.flush()
        return [future.get(timeout=30).offset for future in futures]
    finally:
        producer.close()


def as_json(command: dict[str, Any]) -> bytes:
    return json.dumps(command).encode()


def read_topic(bootstrap: str, topic: str, partitions: int = 1) -> list[ConsumerRecord]:
    """Every committed record of the topic, as it is now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed")
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        found: list[ConsumerRecord] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(p) < end[p] for p in assigned):
            if time.monotonic() > deadline:
                pytest.fail(f"{topic}: could not read to its end")
            for batch in consumer.poll(500).values():
                found += batch
        return found
    finally:
        consumer.close()


def dead_letter_offsets(bootstrap: str, topics: Topics) -> list[int]:
    """The commands-topic offsets the DLQ holds, in DLQ order (repeats included)."""
    return [int(header(r, "offset")) for r in read_topic(bootstrap, topics.dlq)]


def stored_events(store: str) -> list[Any]:
    """Every event in the store, in position order, as domain events."""
    engine = open_engine(store, catch_up=False)
    try:
        app = engine.app
        return [app.mapper.to_domain_event(n) for n in
                app.recorder.select_notifications(start=1, limit=10**9)]
    finally:
        engine.close()


def stored_offset(store: str, topics: Topics) -> int:
    """How far intake has got on partition 0 of the commands topic, as the store has it."""
    engine = open_engine(store, catch_up=False)
    try:
        return engine.app.recorder.max_tracking_id(f"kafka:{topics.commands}:0") or 0
    finally:
        engine.close()


def wait_until(done: Callable[[], bool], what: str, timeout: float = 90.0,
               alive: Callable[[], bool] | None = None) -> None:
    """Polls `done` until it holds; fails naming `what` after `timeout` or when `alive` says the
    process meant to bring it about has exited."""
    deadline = time.monotonic() + timeout
    while not done():
        if alive is not None and not alive():
            pytest.fail(f"the process died before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.2)
