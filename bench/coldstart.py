"""Cold start: how long a new `interlock` process takes to answer on a large store, as a user
runs it: startup alone, `apply` of one command, and the read commands replaying every event
versus starting from the index snapshot kept beside the store.

    .venv/bin/python bench/coldstart.py                      # 1,000,000 events (builds once)
    .venv/bin/python bench/coldstart.py --events 100000      # smaller, quicker
    .venv/bin/python bench/coldstart.py --store sqlite:///COPY.db --skip-replay

The store is the synthetic population of `interlock demo` (about 3.2 events per subject)
applied into SQLite, kept under .interlock/ and reused by later runs; `--store` takes any
SQLite store of that population instead (`apply` adds one event to it per run: give it a copy
of a store you share). Each figure is a fresh process, timed from its launch to its exit
(interpreter start, imports from cached bytecode and, where it happens, the snapshot's refresh
included), the median of `--runs`, with the CPU time it used beside (on a shared machine, what
the wall time would be on an idle one); an in-process breakdown of the snapshot's load follows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain.commands import parse_command
from interlock.config import SNAPSHOT_REFRESH_EVENTS, kept_snapshot
from interlock.demo import synthetic_population
from interlock.engine import open_engine
from projections.gc_pause import gc_paused
from projections.snapshot import load_snapshot, read_info, write_snapshot
from projections.store_follower import StoreFollower

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
EVENTS_PER_SUBJECT = 3.18


def build(store: str, events: int) -> None:
    """The synthetic population, grown until the store holds at least `events` events."""
    engine = open_engine(store, catch_up=False)
    try:
        if engine.app.position >= events:
            print(f"store: {store} already holds {engine.app.position:,} events")
            return
        if engine.app.position:
            sys.exit(f"{store} holds {engine.app.position:,} events, fewer than asked: "
                     "delete it or give another --store")
        subjects = int(events / EVENTS_PER_SUBJECT) + 1
        started = time.perf_counter()
        commands = [parse_command(c) for c in synthetic_population(subjects).commands]
        parsed = time.perf_counter()
        result = engine.app.apply_all(commands)
        done = time.perf_counter()
        print(f"store: built {result.position:,} events ({subjects:,} subjects, "
              f"{result.applied:,} commands): generate+parse {parsed - started:.1f} s, "
              f"apply {done - parsed:.1f} s ({result.position / (done - parsed):,.0f} events/s)")
    finally:
        engine.close()


def timed(*args: str, stdin: str | None = None, script: str = INTERLOCK) -> tuple[float, float]:
    """Seconds from launching the command to its exit, and the CPU seconds (user + system) it
    used: on a shared machine the second says what the first would be on an idle one. A
    failure stops the benchmark."""
    command = list(args) if Path(args[0]).name.startswith("python") else [script, *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or done.stderr:
        sys.exit(f"{' '.join(command)} failed: {done.stderr}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bytecode_cached(*scripts: str) -> None:
    """Every timed process reads cached bytecode, as an installed package does, whatever this
    shell's PYTHONDONTWRITEBYTECODE says: compiled once here, into a cache of the benchmark's
    own (PYTHONPYCACHEPREFIX), so that no checkout is written to."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "interlock-bench-pyc")
    modules = "interlock.cli, interlock.engine, domain.application, projections.compliance, " \
              "projections.snapshot, interlock.persistence.sqlite"
    for script in scripts:
        subprocess.run([str(Path(script).with_name("python")), "-P", "-c", f"import {modules}"],
                       check=True)


def line(label: str, runs: list[tuple[float, float]], target: str = "") -> None:
    walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
    print(f"  {label:<44} {statistics.median(walls):6.2f} s, cpu {statistics.median(cpus):5.2f} s"
          f"  (runs: {', '.join(f'{s:.2f}' for s in walls)})"
          f"{'  target ' + target if target else ''}")


def snapshot_behind(store: str, path: Path, behind: int) -> None:
    """The snapshot beside the store, written `behind` events before its last."""
    engine = open_engine(store, catch_up=False)
    try:
        last = engine.app.position
        started = time.perf_counter()
        engine.follower.catch_up(until=last - behind)
        replayed = time.perf_counter() - started
        started = time.perf_counter()
        info = write_snapshot(engine.index, engine.app.recorder, path)
        written = time.perf_counter() - started
    finally:
        engine.close()
    print(f"snapshot: {path}, position {info.position:,} of {last:,} ({behind:,} behind), "
          f"{info.payload_bytes / 1e6:,.0f} MB, written in {written:.1f} s (after a "
          f"{replayed:.1f} s replay to build it)")


def breakdown(store: str, path: Path) -> None:
    """Where a start from the snapshot spends its time, in one process."""
    engine = open_engine(store, catch_up=False)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        with gc_paused():
            facts, info = load_snapshot(path, engine.app.recorder)
        loaded, cpu = time.perf_counter() - started, time.process_time() - cpu
        from projections.access_index import AccessIndex

        index = AccessIndex()
        index.facts = facts
        started = time.perf_counter()
        position = StoreFollower(engine.app, index).catch_up()
        caught = time.perf_counter() - started
        print(f"  in process: snapshot load {loaded:.2f} s, cpu {cpu:.2f} s "
              f"({info.payload_bytes / 1e6:,.0f} MB, checked and unpickled with the collector "
              f"paused) + catch-up {caught:.2f} s for {position - info.position:,} later events")
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--store", help="store URL (default: an SQLite file per size)")
    parser.add_argument("--behind", type=int, default=0,
                        help="how many events the snapshot beside the store lags it")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-replay", action="store_true",
                        help="leave out the full replays (minutes on a large store)")
    parser.add_argument("--before", metavar="INTERLOCK",
                        help="another checkout's console script (e.g. main's .venv/bin/"
                        "interlock), timed in the same run on the same commands")
    args = parser.parse_args()
    bytecode_cached(INTERLOCK, *([args.before] if args.before else []))
    store = args.store or f"sqlite:///.interlock/bench-coldstart-{args.events}.db"
    path = kept_snapshot(store)
    if path is None or not store.startswith("sqlite:///"):
        sys.exit("--store: an SQLite store (its snapshot is kept beside it)")
    if args.store is None:
        build(store, args.events)
    runs = range(args.runs)
    print(f"each a fresh process, median of {args.runs} (this machine, whatever else runs on it):")
    line("python -c 'import interlock.cli'",
         [timed(sys.executable, "-P", "-c", "import interlock.cli") for _ in runs])
    line("interlock --version", [timed("--version") for _ in runs])
    line("interlock --help", [timed("--help") for _ in runs])

    def one() -> str:
        return json.dumps({"type": "attest_employer", "subject": f"u-bench-{uuid.uuid4().hex}",
                           "org": "acme", "source": "bench"}) + "\n"

    line("interlock apply (one command)",
         [timed("apply", "-", "--store", store, stdin=one()) for _ in runs], "≤ 0.5 s at 1M")
    if args.before:
        python = str(Path(args.before).with_name("python"))
        line("  before: import interlock.cli", [timed(python, "-P", "-c", "import interlock.cli")
                                                for _ in runs])
        line("  before: apply (one command)", [timed(
            "apply", "-", "--store", store, stdin=one(), script=args.before) for _ in runs])
        line("  before: decide", [timed("decide", "u-00001", "fable-5", "--json", "--store",
                                        store, script=args.before) for _ in runs])
    reads = {
        "decide": ["decide", "u-00001", "fable-5", "--json", "--store", store],
        "explain": ["explain", "u-00001", "fable-5", "--json", "--store", store],
        "history": ["history", "u-00001", "--json", "--store", store],
    }
    if not args.skip_replay:
        line("decide, replaying every event (--snapshot off)",
             [timed(*reads["decide"], "--snapshot", "off") for _ in runs])
    if args.behind or not path.is_file():
        snapshot_behind(store, path, args.behind)
    tail = read_info(path).position
    first, cpu = timed(*reads["decide"])
    refreshed = read_info(path).position != tail
    print(f"  first decide from the snapshot beside the store ({args.behind:,} behind"
          f"{'; rewrote it, ≥ ' + format(SNAPSHOT_REFRESH_EVENTS, ',') if refreshed else ''}):"
          f" {first:.2f} s, cpu {cpu:.2f} s")
    for name, command in reads.items():
        line(f"{name} from the snapshot beside the store",
             [timed(*command) for _ in runs], "≤ 1 s at 1M")
    breakdown(store, path)


if __name__ == "__main__":
    main()
