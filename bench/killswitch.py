"""Kill-switch latency: from an order's arrival to the end of its enforcement.

Two set-ups on the same synthetic population (interlock.demo, every subject entitled):

- embedded: the order is applied to the store (that is its arrival, the command recorded); the
  in-process enforcer follows the store and publishes revocations to the revocation log. The
  figure ends at the last revocation published. Beside it, the decision flip: from the same
  arrival to `index.decide` answering deny for a covered subject, asked while the index
  catches up and the enforcer fans out.
- kafka: `interlock intake`, `relay` and `enforce --shard k/N` run as separate processes
  against a real broker (INTERLOCK_KAFKA, else a local one started with
  scripts/kafka-local.sh). The relay publishes the store first; the enforcer shards then start
  fresh (history replayed silently) and a first order that covers no one tells when they have
  caught up. Each order is published to `interlock.commands`; the figure ends when the last
  `enforcement_completed` record of the order (one per partition) is read back from
  `interlock.enforcement`. Beside it, in the same run, the floor: a bare kafka-python producer
  and consumer moving the same bytes in the same number of records to the same partitions.

Each run issues a fresh order and then lifts it (restoring access) before the next run.

    .venv/bin/python bench/killswitch.py [--subjects 100000] [--runs 5] [--skip-kafka]
                                         [--shards N]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def covered_subject(engine) -> str:
    """An entitled subject the order denies (a foreign national): the decision gateways ask."""
    for subject in engine.index.facts.records:
        if engine.index.decide(subject, COVERED_MODEL).effect != "allow":
            continue
        history = engine.index.facts.subjects[subject].attestations.get("nationality", [])
        if history and "US" not in history[-1].values["citizenship"]:
            return subject
    raise SystemExit("no subject the order covers")


COVERED_MODEL = ORDER_COMMAND["models"][0]


def catch_up_and_note(engine, done: list[float]) -> None:
    """The follower's catch-up (apply, fan-out, publish): when it ended, and its CPU time (on
    a shared machine, the part of the wall time that was this work)."""
    started = time.thread_time()
    engine.catch_up()
    done += [time.perf_counter(), time.thread_time() - started]


def embedded(store: str, runs: int) -> tuple[list[float], list[float], list[float], int]:
    """Per run: the order's arrival to the last revocation published (the fan-out), and to
    `index.decide` answering deny for a covered subject (the flip), measured apart: the index
    catches up on a thread while this one asks."""
    started = time.perf_counter()
    engine = open_engine(store, enforce=True)
    console.print(f"embedded: index and enforcer caught up on {engine.index.position:,} events "
                  f"in {time.perf_counter() - started:.1f} s")
    latencies, flips, cpu, revoked = [], [], [], 0
    try:
        log = engine.revocations
        assert log is not None
        subject = covered_subject(engine)
        for run in range(runs):
            name = order_name("embedded", run)
            before = log.last
            arrived = time.perf_counter()
            engine.app.apply(parse_command(order(name)))
            done: list[float] = []
            follower = threading.Thread(target=catch_up_and_note, args=(engine, done))
            follower.start()
            while engine.index.decide(subject, COVERED_MODEL).effect == "allow":
                pass
            flips.append(time.perf_counter() - arrived)
            follower.join()
            latencies.append(done[0] - arrived)
            cpu.append(done[1])
            revoked = sum(r.changes for _, r in log.after(before) if r.name == "access_revoked")
            engine.app.apply(parse_command(lift(name)))
            engine.catch_up()
    finally:
        engine.close()
    return latencies, flips, cpu, revoked


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def kafka_broker() -> Iterator[str]:
    if os.environ.get("INTERLOCK_KAFKA"):
        yield os.environ["INTERLOCK_KAFKA"]
        return
    script = REPO / "scripts" / "kafka-local.sh"
    with tempfile.TemporaryDirectory(prefix="interlock-bench-kafka-") as directory:
        port = str(free_port())  # other benchmarks may run a broker on this machine too
        subprocess.run([str(script), "fetch"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([str(script), "start", directory, port], check=True,
                       stdout=subprocess.DEVNULL)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            subprocess.run([str(script), "stop", directory], check=False)


READER = {"enable_auto_commit": False, "fetch_max_bytes": 64 << 20,
          "max_partition_fetch_bytes": 16 << 20, "fetch_max_wait_ms": 20}
"""The consumers of both figures, Interlock's and the floor's: alike, and tuned to answer as
soon as a record is in (not after kafka-python's 500 ms fetch wait)."""


@dataclass
class Enforced:
    """One order through Kafka, read back to its last completion record."""

    latency: float
    """From the order's publication to the last partition's enforcement_completed, read."""
    enforcer: float
    """The enforcer's own share: its last completion's emitted_at minus recorded_at."""
    changes: int
    sizes: list[tuple[int, int]]
    """(partition, bytes) of every record the order caused, completions included."""


class Reader:
    """Reads interlock.enforcement (read_committed) and finds each order's completions."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      isolation_level="read_committed",
                                      **READER)
        self.partitions = [TopicPartition(topic, p)
                           for p in sorted(self.consumer.partitions_for_topic(topic))]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_end()
        for partition in self.partitions:  # resolve "the end" now, before any order is sent
            self.consumer.position(partition)
        self.last_position = 0

    def next_cause(self, sent: float, timeout: float = 600) -> Enforced:
        """Waits for the completions (one per partition) of the next position after the last
        one seen; records are decoded only after the last is in."""
        from consumers.kafka import header
        from consumers.packing import COMPLETED
        from schemas.codec import decode

        records, done, last = [], {}, sent
        deadline = time.perf_counter() + timeout
        while len(done) < len(self.partitions):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(done)} of {len(self.partitions)} completions")
            for batch in self.consumer.poll(100, max_records=100_000).values():
                for record in batch:
                    position = int(header(record, "position"))
                    if position <= self.last_position:
                        continue
                    records.append(record)
                    if header(record, "type") == COMPLETED.encode():
                        done[record.partition] = record
                        last = time.perf_counter()
        position = {int(header(r, "position")) for r in done.values()}
        assert len(position) == 1, f"completions of several causes: {position}"
        self.last_position = position.pop()
        completions = [decode(r.value)[1] for r in done.values()]
        share = max((c["emitted_at"] - c["recorded_at"]).total_seconds() for c in completions)
        mine = [r for r in records if int(header(r, "position")) == self.last_position]
        return Enforced(last - sent, share, sum(c["changes"] for c in completions),
                        [(r.partition, len(r.value)) for r in mine])

    def close(self) -> None:
        self.consumer.close()


def floor(bootstrap: str, topic: str, sizes: list[tuple[int, int]]) -> float:
    """A bare kafka-python producer and consumer moving the same bytes in the same records to
    the same partitions: from the first send to the last record read."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             **READER)
    partitions = sorted({p for p, _ in sizes})
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    consumer.seek_to_end()
    for p in partitions:
        consumer.position(TopicPartition(topic, p))
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024,
                             max_request_size=1024 * 1024)
    payloads = [(p, os.urandom(n)) for p, n in sizes]
    try:
        started = time.perf_counter()
        for p, payload in payloads:
            producer.send(topic, value=payload, partition=p)
        producer.flush()
        read = 0
        while read < len(payloads):
            read += sum(len(b) for b in consumer.poll(100, max_records=100_000).values())
        return time.perf_counter() - started
    finally:
        producer.close()
        consumer.close()


def through_kafka(store: str, runs: int, events: int, shards: int,
                  snapshot: Path | None = None) -> tuple[
    list[Enforced], list[float], float, list[float]
]:
    """The kill switch through intake, relay and `shards` new enforcer shards: each order's
    latency to its last completion, the bare floor for the same records, how long the new
    shards took to a first completion and the CPU time each had used by then (what a loaded
    machine inflates less than the wall time). Without `snapshot` the relay publishes the
    whole store and the shards replay it; with one (of `store`), the way a fresh shard starts
    at scale, the relay publishes only what follows it and the shards start from it
    (`enforce --snapshot`)."""
    from eventsourcing.persistence import Tracking
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from consumers.kafka import Topics, ensure_topics
    from consumers.packing import ENFORCEMENT_PARTITIONS
    from domain.limits import KAFKA_MAX_MESSAGE_BYTES
    from projections.snapshot import read_info
    from schemas.records import encode_command

    interlock = str(Path(sys.executable).with_name("interlock"))
    enforced, floors = [], []
    with kafka_broker() as bootstrap:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        topics = Topics.prefixed(prefix)
        ensure_topics(bootstrap, topics)
        bare = f"{prefix}floor"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(bare, ENFORCEMENT_PARTITIONS, 1, topic_configs={
            "max.message.bytes": str(KAFKA_MAX_MESSAGE_BYTES)})])
        admin.close()
        common = ["--kafka", bootstrap, "--topic-prefix", prefix]
        start, history = [], events
        if snapshot is not None:
            position = read_info(snapshot).position
            engine = open_engine(store, catch_up=False)
            engine.app.recorder.insert_tracking(Tracking(f"relay:{topics.events}", position))
            engine.close()
            start, history = ["--snapshot", str(snapshot), "--store", store], events - position
        processes = [subprocess.Popen([interlock, name, *common, "--store", store],
                                      stderr=subprocess.DEVNULL) for name in ("relay", "intake")]
        reader = Reader(bootstrap, topics.enforcement)
        producer = KafkaProducer(bootstrap_servers=bootstrap)

        def send(command: dict) -> float:
            parsed = parse_command(command)
            sent = time.perf_counter()
            producer.send(topics.commands, value=encode_command(parsed))
            producer.flush()
            return sent

        try:
            started = time.perf_counter()
            wait_until_published(bootstrap, topics, history)
            console.print(f"kafka: relay published {history:,} events in "
                          f"{time.perf_counter() - started:.1f} s")
            started = time.perf_counter()
            enforcers = [subprocess.Popen(
                [interlock, "enforce", *common, "--shard", f"{k}/{shards}", *start],
                stderr=subprocess.DEVNULL) for k in range(shards)]
            processes += enforcers
            wait_until_started(bootstrap, topics, shards)
            reader.next_cause(send(warm_up()))  # answered once every shard has caught up
            catch_up = time.perf_counter() - started
            cpu = [cpu_seconds(process.pid) for process in enforcers]
            how = f"replayed {history:,} events" if snapshot is None else (
                f"started from a snapshot of {events - history:,} events, replayed {history:,}")
            console.print(f"kafka: {shards} new enforcer shard(s) {how} and closed a first "
                          f"order in {catch_up:.1f} s (CPU per shard: "
                          f"{', '.join(f'{c:.1f} s' for c in cpu)})")
            for run in range(runs):
                name = order_name("kafka", run)
                enforced.append(reader.next_cause(send(order(name))))
                floors.append(floor(bootstrap, bare, enforced[-1].sizes))
                reader.next_cause(send(lift(name)))
        finally:
            reader.close()
            producer.close()
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
    return enforced, floors, catch_up, cpu


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a running process has used (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def warm_up() -> dict:
    """An order that covers no one (no subject is a citizen of Antarctica, and an unknown
    citizenship does not count as one): its completions
    say the enforcers have caught up, and it changes nothing the runs measure."""
    return {**order(order_name("warm-up", 0)), "on_unknown": "ignore",
            "subjects": {"citizenship": {"any_of": ["AQ"]}}}


def wait_until_started(bootstrap: str, topics, shards: int) -> None:
    """Every new shard has committed its starting point (the end of interlock.events then):
    an order sent from now on is enforced, not taken for history."""
    from kafka import KafkaConsumer, TopicPartition

    from consumers.enforcer import Shard

    partition = TopicPartition(topics.events, 0)
    deadline = time.perf_counter() + 120
    for k in range(shards):
        watcher = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=Shard(k, shards).group(topics))
        try:
            while watcher.committed(partition) is None:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"enforcer shard {k}/{shards} did not start")
                time.sleep(0.2)
        finally:
            watcher.close()


def wait_until_published(bootstrap: str, topics, events: int) -> None:
    """The relay has published every stored event."""
    from kafka import KafkaConsumer, TopicPartition

    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                            enable_auto_commit=False)
    partition = TopicPartition(topics.events, 0)
    deadline = time.perf_counter() + 1800
    try:
        while watcher.end_offsets([partition])[partition] < events:
            if time.perf_counter() > deadline:
                raise TimeoutError("the relay did not publish the store")
            time.sleep(0.5)
    finally:
        watcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-kafka", action="store_true")
    parser.add_argument("--shards", type=int, default=1, help="enforcer shards (enforce "
                        "--shard k/N); at most the enforcement topic's partitions")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="interlock-bench-") as directory:
        store = f"sqlite:///{directory}/store.db"
        started = time.perf_counter()
        events = load(store, args.subjects)
        console.print(f"population: {args.subjects:,} subjects, {events:,} events, built in "
                      f"{time.perf_counter() - started:.1f} s")
        local, flips, cpu, revoked = embedded(store, args.runs)
        table = Table("set-up", "runs", "revocations / order", "p50", "p99", "target",
                      title="Kill switch: order arrival → last revocation / completion record")
        table.add_row("embedded (SQLite, in-process enforcer)", str(args.runs), f"{revoked:,}",
                      f"{percentile(local, 0.5) * 1000:,.0f} ms",
                      f"{percentile(local, 0.99) * 1000:,.0f} ms", "p50 ≤ 200 ms")
        table.add_row("  of which the follower thread's CPU time", "", "",
                      f"{percentile(cpu, 0.5) * 1000:,.0f} ms",
                      f"{percentile(cpu, 0.99) * 1000:,.0f} ms", "")
        table.add_row("  decision flip: order arrival → decide answers deny", str(args.runs),
                      "", f"{percentile(flips, 0.5) * 1000:,.1f} ms",
                      f"{percentile(flips, 0.99) * 1000:,.1f} ms", "p50 ≤ 200 ms")
        if not args.skip_kafka:
            runs, floors, _, _ = through_kafka(store, args.runs, events + 2 * args.runs,
                                            args.shards)
            latencies = [r.latency for r in runs]
            shares = [r.enforcer for r in runs]
            table.add_row(f"Kafka (intake → relay → {args.shards} enforcer shard(s)), to the "
                          "last completion", str(args.runs), f"{runs[-1].changes:,}",
                          f"{percentile(latencies, 0.5) * 1000:,.0f} ms",
                          f"{percentile(latencies, 0.99) * 1000:,.0f} ms", "p50 ≤ 1 s")
            table.add_row("  of which enforcer (completion emitted - order recorded)", "", "",
                          f"{percentile(shares, 0.5) * 1000:,.0f} ms",
                          f"{percentile(shares, 0.99) * 1000:,.0f} ms", "")
            sizes = runs[-1].sizes
            table.add_row(f"  floor: bare kafka-python, same {len(sizes)} records, "
                          f"{sum(n for _, n in sizes):,} bytes", str(args.runs), "",
                          f"{percentile(floors, 0.5) * 1000:,.0f} ms",
                          f"{percentile(floors, 0.99) * 1000:,.0f} ms", "")
            table.add_row("  Interlock / floor (p50)", "", "",
                          f"{percentile(latencies, 0.5) / percentile(floors, 0.5):,.1f}x", "",
                          "≤ 2x")
        console.print(table)
        console.print(f"[dim]{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores[/]")


if __name__ == "__main__":
    main()
