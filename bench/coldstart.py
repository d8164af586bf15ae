"""Cold start: how long a new process takes to answer its first decision on a large store,
replaying every event versus starting from an index snapshot.

    .venv/bin/python bench/coldstart.py                      # 1,000,000 events (builds once)
    .venv/bin/python bench/coldstart.py --events 100000      # smaller, quicker
    .venv/bin/python bench/coldstart.py --behind 50000       # snapshot 50k events old

The store is the synthetic population of `interlock demo` (about 3.2 events per subject)
applied into SQLite, kept under .interlock/ and reused by later runs. Each cold start is a
fresh `interlock decide` process, timed from its launch to its answer (interpreter start and
imports included), the median of `--runs`; an in-process breakdown follows.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain.commands import parse_command
from interlock.demo import synthetic_population
from interlock.engine import open_engine
from projections.snapshot import read_info, restore_index, write_snapshot
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


def snapshot(store: str, path: Path, behind: int) -> int:
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
    print(f"snapshot: position {info.position:,} of {last:,} ({behind:,} behind), "
          f"{info.payload_bytes / 1e6:,.0f} MB, written in {written:.1f} s "
          f"(after a {replayed:.1f} s replay to build it)")
    return last


def first_decision(store: str, snapshot_path: Path | None) -> float:
    """Seconds from launching `interlock decide` to its answer."""
    command = [INTERLOCK, "decide", "u-00001", "fable-5", "--json", "--store", store]
    if snapshot_path is not None:
        command[1:1] = ["--snapshot", str(snapshot_path)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or done.stderr:
        sys.exit(f"{' '.join(command)} failed: {done.stderr}")
    return elapsed


def breakdown(store: str, path: Path) -> None:
    engine = open_engine(store, catch_up=False)
    try:
        started = time.perf_counter()
        engine.catch_up()
        print(f"  in process, replay: {time.perf_counter() - started:.2f} s for "
              f"{engine.index.position:,} events")
    finally:
        engine.close()
    engine = open_engine(store, catch_up=False)
    try:
        started = time.perf_counter()
        restored = restore_index(path, engine.app.recorder)
        loaded = time.perf_counter() - started
        assert restored is not None, "the snapshot did not load"
        index, info = restored
        started = time.perf_counter()
        position = StoreFollower(engine.app, index).catch_up()
        caught = time.perf_counter() - started
        print(f"  in process, snapshot: load {loaded:.2f} s + catch-up {caught:.2f} s for "
              f"{position - info.position:,} later events")
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--store", help="store URL (default: an SQLite file per size)")
    parser.add_argument("--snapshot", type=Path, help="snapshot file (default: beside it)")
    parser.add_argument("--behind", type=int, default=0,
                        help="how many events the snapshot lags the store")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    store = args.store or f"sqlite:///.interlock/bench-coldstart-{args.events}.db"
    path = args.snapshot or Path(f".interlock/bench-coldstart-{args.events}.snapshot")
    build(store, args.events)
    last = snapshot(store, path, args.behind)
    assert read_info(path).position == last - args.behind
    replay = [first_decision(store, None) for _ in range(args.runs)]
    restored = [first_decision(store, path) for _ in range(args.runs)]
    print(f"cold start to first decision (median of {args.runs}, process launch included):")
    print(f"  replaying {last:,} events:   {statistics.median(replay):6.2f} s  "
          f"(runs: {', '.join(f'{s:.2f}' for s in replay)})")
    print(f"  from the snapshot:          {statistics.median(restored):6.2f} s  "
          f"(runs: {', '.join(f'{s:.2f}' for s in restored)})")
    breakdown(store, path)


if __name__ == "__main__":
    main()
