"""Kill-switch latency: from an order's arrival to the last revocation it causes.

Two set-ups on the same synthetic population (interlock.demo, every subject entitled):

- embedded: the order is applied to the store (that is its arrival, the command recorded); the
  in-process enforcer follows the store and publishes revocations to the revocation log. The
  figure ends at the last revocation published.
- kafka: `interlock intake`, `relay` and `enforce` run as separate processes against a real
  broker (INTERLOCK_KAFKA, else a local one started with scripts/kafka-local.sh). The order is
  published to `interlock.commands`; the figure ends when the last revocation is read back from
  `interlock.enforcement`.

Each run issues a fresh order and then lifts it (restoring access) before the next run.

    .venv/bin/python bench/killswitch.py [--subjects 100000] [--runs 5] [--skip-kafka]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from domain.commands import parse_command  # noqa: E402
from interlock.demo import ORDER_COMMAND, synthetic_population  # noqa: E402
from interlock.engine import open_engine  # noqa: E402

console = Console()


def order(name: str) -> dict:
    return {**ORDER_COMMAND, "directive": name, "received_at": datetime.now(UTC).isoformat()}


def lift(name: str) -> dict:
    return {"type": "lift_directive", "directive": name}


def order_name(setup: str, run: int) -> str:
    return f"bench-{setup}-{run}-{uuid.uuid4().hex[:6]}"


def load(store: str, subjects: int) -> int:
    engine = open_engine(store, catch_up=False)
    try:
        applied = engine.app.apply_all(
            parse_command(c) for c in synthetic_population(subjects).commands
        )
        return applied.position
    finally:
        engine.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def embedded(store: str, runs: int) -> tuple[list[float], int]:
    started = time.perf_counter()
    engine = open_engine(store, enforce=True)
    console.print(f"embedded: index and enforcer caught up on {engine.index.position:,} events "
                  f"in {time.perf_counter() - started:.1f} s")
    latencies, revoked = [], 0
    try:
        log = engine.revocations
        assert log is not None
        for run in range(runs):
            name = order_name("embedded", run)
            before = log.last
            arrived = time.perf_counter()
            engine.app.apply(parse_command(order(name)))
            engine.catch_up()
            latencies.append(time.perf_counter() - arrived)
            revoked = sum(r.changes for _, r in log.after(before) if r.name == "access_revoked")
            engine.app.apply(parse_command(lift(name)))
            engine.catch_up()
    finally:
        engine.close()
    return latencies, revoked


@contextmanager
def kafka_broker() -> Iterator[str]:
    if os.environ.get("INTERLOCK_KAFKA"):
        yield os.environ["INTERLOCK_KAFKA"]
        return
    script = REPO / "scripts" / "kafka-local.sh"
    with tempfile.TemporaryDirectory(prefix="interlock-bench-kafka-") as directory:
        port = "39092"
        subprocess.run([str(script), "fetch"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([str(script), "start", directory, port], check=True,
                       stdout=subprocess.DEVNULL)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            subprocess.run([str(script), "stop", directory], check=False)


def through_kafka(store: str, runs: int, events: int) -> tuple[list[float], list[float], int]:
    from kafka import KafkaConsumer, KafkaProducer

    from consumers.kafka import Topics, ensure_topics, header
    from schemas.records import encode_command

    interlock = str(Path(sys.executable).with_name("interlock"))
    latencies, compute, revoked = [], [], 0
    with kafka_broker() as bootstrap:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        topics = Topics.prefixed(prefix)
        ensure_topics(bootstrap, topics)
        common = ["--kafka", bootstrap, "--topic-prefix", prefix]
        processes = [
            subprocess.Popen([interlock, name, *common, *([] if name == "enforce" else
                                                          ["--store", store])],
                             stderr=subprocess.DEVNULL)
            for name in ("relay", "enforce", "intake")
        ]
        consumer = KafkaConsumer(topics.enforcement, bootstrap_servers=bootstrap,
                                 group_id=None, auto_offset_reset="latest",
                                 isolation_level="read_committed", enable_auto_commit=False)
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        try:
            consumer.poll(100)
            started = time.perf_counter()
            wait_until_enforcer_caught_up(bootstrap, topics, events)
            console.print(f"kafka: relay published and enforcer replayed {events:,} events in "
                          f"{time.perf_counter() - started:.1f} s")
            for run in range(runs):
                name = order_name("kafka", run)
                command = parse_command(order(name))
                arrived = time.perf_counter()
                producer.send(topics.commands, key=command.directive.encode(),
                              value=encode_command(command))
                producer.flush()
                count, last, emitted = drain(consumer, header, "access_revoked")
                latencies.append(last - arrived)
                compute.append(emitted)
                revoked = count
                producer.send(topics.commands, value=encode_command(parse_command(lift(name))))
                producer.flush()
                drain(consumer, header, "access_restored")
        finally:
            consumer.close()
            producer.close()
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
    return latencies, compute, revoked


def wait_until_enforcer_caught_up(bootstrap: str, topics, events: int) -> None:
    """The relay has published every stored event and the enforcer has committed its way to the
    end of `interlock.events` (a transaction marker follows the last record)."""
    from kafka import KafkaConsumer, TopicPartition

    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=topics.name("enforcer"),
                            enable_auto_commit=False)
    partition = TopicPartition(topics.events, 0)
    deadline = time.perf_counter() + 1800
    try:
        while time.perf_counter() < deadline:
            end = watcher.end_offsets([partition])[partition]
            committed = watcher.committed(partition) or 0
            if end >= events and committed >= end - 1:
                return
            time.sleep(0.5)
        raise TimeoutError("the enforcer did not catch up")
    finally:
        watcher.close()


def drain(consumer, header, kind: str, quiet: float = 2.0) -> tuple[int, float, float]:
    """Reads records of `kind` until none arrive for `quiet` seconds; returns how many, when the
    last one was read, and the enforcer's own share (last emitted_at minus recorded_at).
    Records are decoded only after the last one is in, so decoding does not add to the time."""
    from schemas.codec import decode

    wanted = kind.encode()
    records, last = [], time.perf_counter()
    idle_since = time.perf_counter()
    while time.perf_counter() - idle_since < quiet or not records:
        for batch in consumer.poll(200).values():
            fresh = [r for r in batch if header(r, "type") == wanted]
            if fresh:
                records += fresh
                last = idle_since = time.perf_counter()
        if not records and time.perf_counter() - idle_since > 120:
            raise TimeoutError(f"no {kind} records")
    bodies = [decode(record.value)[1] for record in records]
    share = max((b["emitted_at"] - b["recorded_at"]).total_seconds() for b in bodies)
    return len(records), last, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-kafka", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="interlock-bench-") as directory:
        store = f"sqlite:///{directory}/store.db"
        started = time.perf_counter()
        events = load(store, args.subjects)
        console.print(f"population: {args.subjects:,} subjects, {events:,} events, built in "
                      f"{time.perf_counter() - started:.1f} s")
        local, revoked = embedded(store, args.runs)
        table = Table("set-up", "runs", "revocations / order", "p50", "p99", "target",
                      title="Kill switch: order arrival → last revocation")
        table.add_row("embedded (SQLite, in-process enforcer)", str(args.runs), f"{revoked:,}",
                      f"{percentile(local, 0.5) * 1000:,.0f} ms",
                      f"{percentile(local, 0.99) * 1000:,.0f} ms", "p50 ≤ 300 ms")
        if not args.skip_kafka:
            remote, compute, revoked = through_kafka(store, args.runs, events + 2 * args.runs)
            table.add_row("Kafka (intake → relay → enforcer)", str(args.runs), f"{revoked:,}",
                          f"{percentile(remote, 0.5) * 1000:,.0f} ms",
                          f"{percentile(remote, 0.99) * 1000:,.0f} ms", "p50 ≤ 1 s")
            table.add_row("  of which enforcer (emitted - recorded)", "", "",
                          f"{statistics.median(compute) * 1000:,.0f} ms",
                          f"{max(compute) * 1000:,.0f} ms", "")
        console.print(table)
        console.print(f"[dim]{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores[/]")


if __name__ == "__main__":
    main()
