"""Interlock at population scale: every figure of the scale issue, measured in one run.

    .venv/bin/python bench/scale.py [--subjects 1000000] [--cache DIR] [--runs 5]
                                    [--skip-kafka] [--skip-cedar] [--cedar-subjects 10000]

The population (`interlock.demo.synthetic_population`, about 3 events per subject) is built
once through the application (bench/population.py) and cached in --cache; each run works on a
copy of it, so the cache stays as it was. Then, each figure beside its target and, where one
is asked for, a peer measured in the same run:

- index memory per subject (RSS growth of a fresh child rebuilding the index, no cached
  decisions) and rebuild events/s from SQLite, with the read / decode / apply breakdown beside
  eventsourcing's per-row path (bench/decide.py's rebuild children);
- rebuild from an index snapshot (written by bench/coldstart.py's `snapshot`);
- decide vs cedarpy with a pre-parsed Entities handle (bench/decide.py's `bench_decisions`,
  on --cedar-subjects: a Cedar Entities handle of a million users is not what it measures);
- the kill switch embedded and through Kafka (bench/killswitch.py's `embedded` and
  `through_kafka`), p50/p99 of --runs orders, and how long its fresh enforcer shards take to a
  first completion: started from the run's snapshot (`enforce --snapshot`, the relay
  publishing only what follows it) and, with `--enforcer-start replay` or `both`, replaying
  the whole store from the topic;
- the decision flip: from an order recorded in the store to a decision replica (`interlock
  serve --follow kafka`, fed by `interlock relay`) answering deny over HTTP for a covered
  subject, and the same for the embedded server (`interlock serve`);
- the Kafka floor: a bare kafka-python producer and consumer moving as many records as the
  order revoked, end to end, on the same broker.

A benchmark, not a test: a missed target is reported, not fatal. The machine's load average is
printed with the figures; on a shared machine read the ratios rather than the absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# bench/ itself off the path, or bench/http.py would stand for the standard library's http;
# the other benchmarks are imported as bench.NAME instead.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(REPO))

import http.client  # noqa: E402

from bench import coldstart, decide, killswitch, population  # noqa: E402
from bench.decide import Report, Row, verdict  # noqa: E402
from bench.killswitch import percentile  # noqa: E402
from domain.commands import parse_command  # noqa: E402
from interlock.demo import synthetic_population  # noqa: E402
from interlock.engine import open_engine  # noqa: E402

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
MODEL = "fable-5"
"""The model the flip is asked about: the order covers it."""
"""Size of one floor record: about one per-pair enforcement record in Avro."""
FLIP_POLL_S = 0.002
"""Pause between two decide requests while waiting for the flip."""


# --------------------------------------------------------------------------------------------
# the figures


class Figures(Report):
    """The run's table, each row also printed as soon as it is measured (a long run that
    stops half-way still leaves what it measured)."""

    def add(self, row: Row) -> None:
        super().add(row)
        cells = "  ".join(cell for cell in (row.interlock, row.cedar, row.ratio) if cell)
        print(f"FIGURE {row.metric}: {cells}  [{row.target or '-'}] {row.verdict}", flush=True)


def rebuild_figures(url: str, subjects: int, snapshot: Path, report: Report,
                    measure: bool = True) -> None:
    """Memory per subject, rebuild from SQLite (with its breakdown), rebuild from a snapshot;
    without `measure`, only the snapshot is written (the flips start replicas from it)."""
    if not measure:
        coldstart.snapshot_behind(url, snapshot, 0)
        return
    plain = decide.rebuild_in_child(url, "plain")
    events, seconds = plain["position"], plain["seconds"]
    report.add(Row("index memory per subject (RSS growth, rebuilt child)",
                   f"{plain['rss_grown'] / subjects:,.0f} B", "", "", "<= 400 B",
                   verdict(plain["rss_grown"] / subjects <= 400)))
    rate = events / seconds
    report.add(Row(f"rebuild from SQLite ({events:,} events)",
                   f"{rate:,.0f}/s = {seconds:.1f} s", "", "", ">= 300,000/s; <= 10 s",
                   verdict(rate >= 300_000 and seconds <= 10)))
    pages = decide.rebuild_in_child(url, "breakdown")
    mapper = decide.rebuild_in_child(url, "breakdown-mapper")
    for step, what in (("read", "rows"), ("decode", "events"), ("apply", "FactBase")):
        report.add(Row(f"  {step} ({what}; gc off) vs eventsourcing per-row",
                       f"{events / pages[step]:,.0f}/s", f"{events / mapper[step]:,.0f}/s",
                       f"{mapper[step] / pages[step]:.1f}x"))
    coldstart.snapshot_behind(url, snapshot, 0)
    restored = decide.rebuild_in_child(url, "snapshot", snapshot)
    report.add(Row(f"rebuild from a snapshot (+{restored['tail']:,} tail events)",
                   f"{restored['seconds']:.1f} s (load {restored['load_seconds']:.1f} s)",
                   f"{seconds:.1f} s", f"{seconds / restored['seconds']:.1f}x", "<= 3 s",
                   verdict(restored["seconds"] <= 3)))


def cedar_figures(subjects: int, report: Report) -> None:
    """bench/decide.py's comparison; its rows against the handle, and the agreement."""
    quick = subjects < 5_000
    settings = decide.Settings(
        subjects=subjects, events=0, seed=521,
        requests=10_000 if quick else 200_000, cold_requests=2_000 if quick else 50_000,
        cedar_requests=2_000 if quick else 20_000, batch_size=500 if quick else 1_000)
    theirs = Report()
    agreed, compared = decide.bench_decisions(settings, theirs)
    wanted = ("decision median, warm (a)", "single-call 1/median: warm (a) vs (h)",
              "single-call 1/median: computed (b) vs (h)")
    for row in theirs.rows:
        if row.metric in wanted:
            report.add(Row(f"decide vs cedarpy, {subjects:,} subjects: {row.metric}",
                           row.interlock, row.cedar, row.ratio, row.target, row.verdict))
    report.add(Row("  Interlock and Cedar agree", f"{agreed:,}/{compared:,}", "", "", "all",
                   verdict(agreed == compared)))


def killswitch_embedded(url: str, runs: int, report: Report) -> None:
    latencies, flips, cpu, revoked = killswitch.embedded(url, runs)
    report.add(Row(f"kill switch embedded, p50 / p99 of {runs} ({revoked:,} revocations)",
                   _p50_p99(latencies), "", "", "p50 <= 1 s at 1M",
                   verdict(percentile(latencies, 0.5) <= 1.0)))
    report.add(Row("  of which the follower thread's CPU time", _p50_p99(cpu)))
    report.add(Row("  decision flip in the same engine (order → decide answers deny)",
                   _p50_p99(flips), "", "", "p50 <= 200 ms",
                   verdict(percentile(flips, 0.5) <= 0.2)))


def killswitch_kafka(url: str, runs: int, shards: int, report: Report,
                     snapshot: Path | None) -> None:
    """bench/killswitch.py's Kafka set-up: latency to the order's last completion record,
    beside the bare kafka-python floor moving the same records, measured in the same run. The
    new shards start from `snapshot` (the topic carrying only what follows it), or, without
    one, replay the whole store from the topic."""
    events = _position(url)
    enforced, floors, catch_up, cpu = killswitch.through_kafka(url, runs, events, shards,
                                                               snapshot)
    latencies = [run.latency for run in enforced]
    report.add(Row(f"kill switch through Kafka ({shards} shard(s)), p50 / p99 of {runs} "
                   f"({enforced[-1].changes:,} revocations, {len(enforced[-1].sizes):,} records)",
                   _p50_p99(latencies), _p50_p99(floors),
                   f"{percentile(latencies, 0.5) / percentile(floors, 0.5):.1f}x",
                   "p50 <= 5 s at 1M; <= 2x floor",
                   verdict(percentile(latencies, 0.5) <= 5.0)))
    report.add(Row("  of which the enforcer (completion emitted - order recorded)",
                   _p50_p99([run.enforcer for run in enforced])))
    if snapshot is None:
        report.add(Row(f"  new enforcer shards replaying the store ({events:,} events from "
                       "the topic), to a first completion", f"{catch_up:,.1f} s"))
        report.add(Row("    CPU time of each shard by then", _seconds(cpu)))
        return
    # Judged at 3M events only: a start has seconds of fixed cost (joining the group,
    # initialising transactions, the warm-up order's way through intake and relay), so the
    # target does not scale down to a smaller store.
    report.add(Row(f"  fresh enforcer shards from a snapshot (store at {events:,} events), to "
                   "a first completion", f"{catch_up:,.1f} s", "", "", "3M events <= 30 s",
                   verdict(catch_up <= 30) if events >= 3_000_000 else "not judged here"))
    report.add(Row("    CPU time of each shard by then", _seconds(cpu)))


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:,.1f} s" for value in values)


def embedded_flip(url: str, snapshot: Path, runs: int, report: Report) -> None:
    """The decision flip at the embedded server (`interlock serve`), started from `snapshot`:
    its index and its kill switch (reach read from the facts, the timetable from the events
    still to come), then the events after the snapshot."""
    subject = covered_subject()
    started = time.perf_counter()
    with serving(["serve", "--store", url], env={"INTERLOCK_SNAPSHOT": str(snapshot)}) as port:
        report.add(Row("embedded server (kill switch in-process) ready, from the snapshot",
                       f"{time.perf_counter() - started:,.1f} s"))
        latencies = decision_flip(url, port, subject, runs)
    report.add(Row(f"decision flip, embedded server (HTTP, {subject}), p50 / p99",
                   _p50_p99(latencies), "", "", "p50 <= 200 ms",
                   verdict(percentile(latencies, 0.5) <= 0.2)))


def replica_flip(url: str, snapshot: Path, runs: int, report: Report) -> None:
    """The decision flip at a replica started from `snapshot`, the relay publishing what
    follows it (so the topic does not have to carry the whole history first)."""
    from eventsourcing.persistence import Tracking

    from consumers.kafka import Topics, ensure_topics

    subject = covered_subject()
    with killswitch.kafka_broker() as bootstrap:
        prefix = f"scale{uuid.uuid4().hex[:6]}."
        topics = Topics.prefixed(prefix)
        ensure_topics(bootstrap, topics)
        common = ["--kafka", bootstrap, "--topic-prefix", prefix, "--store", url]
        writer = open_engine(url, catch_up=False)
        writer.app.recorder.insert_tracking(Tracking(f"relay:{topics.events}",
                                                     snapshot_position(snapshot)))
        writer.close()
        relay = subprocess.Popen([INTERLOCK, "relay", *common], stderr=subprocess.DEVNULL)
        try:
            with serving(["serve", "--follow", "kafka", *common],
                         env={"INTERLOCK_SNAPSHOT": str(snapshot)}) as port:
                latencies = decision_flip(url, port, subject, runs)
        finally:
            relay.terminate()
            relay.wait(timeout=60)
    report.add(Row(f"decision flip, replica (serve --follow kafka, {subject}), p50 / p99",
                   _p50_p99(latencies), "", "", "p50 <= 200 ms",
                   verdict(percentile(latencies, 0.5) <= 0.2)))


def decision_flip(url: str, port: int, subject: str, runs: int) -> list[float]:
    """Seconds from recording an order in the store to the server at `port` answering deny
    for `subject`, per run; each order is lifted (and allow seen again) before the next, and
    an embedded server's kill switch has finished the lift's fan-out (`enforced_position`):
    the flip of an order that arrives while the server is otherwise idle. (An order that
    arrives during another event's fan-out is applied when that fan-out ends.)"""
    writer = open_engine(url, catch_up=False)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    try:
        for run in range(runs):
            name = killswitch.order_name("flip", run)
            wait_for(connection, subject, "allow")
            wait_enforced(connection, writer.app.position)
            started = time.perf_counter()
            writer.app.apply(parse_command(killswitch.order(name)))
            wait_for(connection, subject, "deny")
            latencies.append(time.perf_counter() - started)
            writer.app.apply(parse_command(killswitch.lift(name)))
        wait_for(connection, subject, "allow")
    finally:
        connection.close()
        writer.close()
    return latencies


def wait_for(connection: http.client.HTTPConnection, subject: str, effect: str,
             timeout: float = 120.0) -> None:
    body = json.dumps({"subject": subject, "model": MODEL})
    deadline = time.perf_counter() + timeout
    while True:
        try:
            connection.request("POST", "/v1/decide", body, {"content-type": "application/json"})
            answer = connection.getresponse()
            status, data = answer.status, answer.read()
        except TimeoutError:  # a server that holds decisions while it applies: ask again
            connection.close()
            status, data = 0, b"no answer within the connection's timeout"
        if status == 200 and json.loads(data)["effect"] == effect:
            return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{subject} is not {effect} after {timeout:.0f} s: "
                               f"{status} {data[:200]!r}")
        time.sleep(FLIP_POLL_S)


def wait_enforced(connection: http.client.HTTPConnection, position: int,
                  timeout: float = 300.0) -> None:
    """Until the server's kill switch (if it has one) has published up to `position`."""
    deadline = time.perf_counter() + timeout
    while True:
        connection.request("GET", "/v1/position")
        enforced = json.loads(connection.getresponse().read()).get("enforced_position")
        if enforced is None or enforced >= position:
            return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the kill switch is at {enforced}, not {position}, "
                               f"after {timeout:.0f} s")
        time.sleep(0.05)


@contextmanager
def serving(arguments: list[str], env: dict[str, str] | None = None,
            timeout: float = 1800.0) -> Iterator[int]:
    """`interlock ARGUMENTS --port P` until it answers /readyz; yields P, then stops it."""
    port = killswitch.free_port()
    process = subprocess.Popen([INTERLOCK, *arguments, "--port", str(port)],
                               env={**os.environ, **(env or {})}, stderr=subprocess.PIPE)
    try:
        deadline = time.perf_counter() + timeout
        while not ready(port):
            if process.poll() is not None:
                said = process.stderr.read().decode()[-2000:] if process.stderr else ""
                raise SystemExit(f"interlock {' '.join(arguments)} exited: {said}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"interlock {arguments[0]} not ready after {timeout:.0f} s")
            time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # busy applying under its lock: not worth waiting
            process.kill()
            process.wait()


def ready(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False


def covered_subject() -> str:
    """The first subject of the population that holds fable-5 and whom the order covers (a
    foreign national with a plan of their own): the population's prefix does not depend on
    its size."""
    commands = synthetic_population(1_000).commands
    foreign = {c["subject"] for c in commands
               if c["type"] == "attest_nationality" and "US" not in c["citizenships"]}
    return next(c["grantee"]["subject"] for c in commands
                if c["type"] == "grant_entitlement" and c["grantee"].get("subject") in foreign)


def snapshot_position(path: Path) -> int:
    from projections.snapshot import read_info

    return read_info(path).position


def _position(url: str) -> int:
    engine = open_engine(url, catch_up=False)
    try:
        return engine.app.position
    finally:
        engine.close()


def _p50_p99(latencies: list[float]) -> str:
    return (f"{percentile(latencies, 0.5) * 1000:,.0f} / "
            f"{percentile(latencies, 0.99) * 1000:,.0f} ms")


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path,
                        help="where the population's store is kept (default: "
                             ".interlock/scale-SUBJECTS)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-kafka", action="store_true",
                        help="no replica flip, Kafka kill switch or floor")
    parser.add_argument("--skip-kafka-killswitch", action="store_true",
                        help="keep the replica flip and the floor, not the kill switch through "
                             "Kafka")
    parser.add_argument("--shards", type=int, default=2,
                        help="enforcer shards in the Kafka kill switch (docker-compose runs 2)")
    parser.add_argument("--enforcer-start", choices=("snapshot", "replay", "both"),
                        default="snapshot",
                        help="how the Kafka kill switch's new shards start: from the run's "
                             "snapshot (the relay publishing only what follows it, as a fresh "
                             "shard starts at scale), replaying the whole store from the topic "
                             "(the relay publishing all of it first), or both, one after the "
                             "other")
    parser.add_argument("--skip-cedar", action="store_true")
    parser.add_argument("--skip-rebuild", action="store_true",
                        help="no memory, rebuild or snapshot figures (the snapshot is written)")
    parser.add_argument("--work", type=Path,
                        help="keep the run's copy of the store and its snapshot here (default: "
                             "a temporary directory); a copy already there is used as it is, and "
                             "with --skip-rebuild its snapshot too")
    parser.add_argument("--skip-embedded", action="store_true",
                        help="no embedded kill switch (it replays the store with its kill "
                             "switch first) or embedded server flip")
    parser.add_argument("--cedar-subjects", type=int, default=10_000)
    options = parser.parse_args(argv)
    cache = options.cache or REPO / ".interlock" / f"scale-{options.subjects}"
    started = time.perf_counter()
    print(f"Interlock at scale: {options.subjects:,} subjects, {os.cpu_count()} CPUs, "
          f"load average {_load()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True)

    _, built, fresh = population.cached(cache, options.subjects, report=True)
    report = Figures(peer="peer / floor")
    report.add(Row(f"population: {built.subjects:,} subjects, {built.events:,} events",
                   f"{built.commands_per_s:,.0f} commands/s",
                   "", "", "", "built now" if fresh else f"cached ({built.built_at})"))
    with working_copy(cache, options.work) as work:
        store = population.store_url(work)
        snapshot = work / "index.snapshot"
        if not (options.skip_rebuild and snapshot.exists()):
            rebuild_figures(store, built.subjects, snapshot, report, not options.skip_rebuild)
        if not options.skip_cedar:
            cedar_figures(options.cedar_subjects, report)
        if not options.skip_kafka:
            replica_flip(store, snapshot, options.runs, report)
        if not options.skip_embedded:
            killswitch_embedded(store, options.runs, report)
        if not (options.skip_kafka or options.skip_kafka_killswitch):
            if options.enforcer_start in ("snapshot", "both"):
                killswitch_kafka(store, options.runs, options.shards, report, snapshot)
            if options.enforcer_start in ("replay", "both"):
                killswitch_kafka(store, options.runs, options.shards, report, None)
        if not options.skip_embedded:
            embedded_flip(store, snapshot, options.runs, report)
    report.add(Row("peak RSS of this process", f"{decide.peak_rss_bytes() / 1e6:,.0f} MB"))
    print(f"\nInterlock at {built.subjects:,} subjects ({built.events:,} events)")
    report.print()
    print(f"  total {time.perf_counter() - started:.0f} s; load average {_load()} at the end "
          f"({os.cpu_count()} CPUs)")
    return 0


@contextmanager
def working_copy(cache: Path, work: Path | None) -> Iterator[Path]:
    """A directory holding a copy of the cached store, which the run may write to: `work`
    (copied only when it holds none yet), else a temporary one."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        if not (work / population.STORE_FILE).exists():
            shutil.copy(cache / population.STORE_FILE, work / population.STORE_FILE)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="interlock-scale-") as directory:
        shutil.copy(cache / population.STORE_FILE, Path(directory) / population.STORE_FILE)
        yield Path(directory)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
