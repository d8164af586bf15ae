"""Replay (and verify) speed on a store of a million events or more.

    .venv/bin/python bench/replay.py [--events 1000000] [--store sqlite:///.interlock/replay-1m.db]
                                     [--rebuild] [--verify]

Builds the store once (the demo's synthetic population, sized to reach --events, plus the 5:21
p.m. order, applied through the application like any command, so every event is also sealed in
the hash chain), then runs the real `interlock replay --json` on it, and with --verify
`interlock verify --json`, and prints their figures next to the targets. A benchmark,
not a test: a missed target is reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from domain.commands import parse_command
from interlock.demo import ORDER_COMMAND, DemoClock, et, synthetic_population
from interlock.engine import open_engine

EVENTS_PER_SUBJECT = 3.0
"""A little under what the synthetic population stores per subject (about 3.07: registration,
attestations, grants), so the store reaches --events."""
TARGET_EVENTS_PER_S = 100_000
TARGET_1M_SECONDS = 10.0
INTERLOCK = str(Path(sys.executable).with_name("interlock"))


def build(store: str, events: int) -> tuple[int, float]:
    """Applies enough of the synthetic population to store at least `events` events."""
    if store.startswith("sqlite:///"):
        Path(store.removeprefix("sqlite:///")).unlink(missing_ok=True)
    clock = DemoClock(et(9, 0))
    engine = open_engine(store, clock=clock, catch_up=False)
    started = time.perf_counter()
    try:
        size = math.ceil(events / EVENTS_PER_SUBJECT)
        population = synthetic_population(size)
        with engine.app.batch(flush_every=5000) as batch:
            for number, command in enumerate(population.commands, start=1):
                batch.apply(parse_command(command))
                if number % 100_000 == 0:
                    sys.stderr.write(f"  {number:,} of {len(population.commands):,} commands\n")
        clock.set(et(17, 21))
        engine.app.apply(parse_command(ORDER_COMMAND))
        position = engine.app.position
    finally:
        engine.close()
    if position < events:
        raise SystemExit(f"built only {position:,} events; raise EVENTS_PER_SUBJECT's guess")
    return position, time.perf_counter() - started


def run(*args: str) -> dict[str, Any]:
    result = subprocess.run([INTERLOCK, *args, "--json"], capture_output=True, text=True,
                            check=False)
    if result.returncode not in (0, 1):
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--store", default="sqlite:///.interlock/replay-1m.db")
    parser.add_argument("--rebuild", action="store_true", help="Build the store anew.")
    parser.add_argument("--verify", action="store_true", help="Also time `interlock verify`.")
    options = parser.parse_args()

    existing = open_engine(options.store, catch_up=False)
    position = existing.app.position
    existing.close()
    if options.rebuild or position < options.events:
        print(f"building {options.store} with at least {options.events:,} events ...")
        position, seconds = build(options.store, options.events)
        print(f"built {position:,} events in {seconds:.1f} s ({position / seconds:,.0f} events/s "
              "written, hash chain included)")
    else:
        print(f"{options.store} holds {position:,} events")

    replayed = run("replay", "--store", options.store)
    rate, seconds = replayed["events_per_second"], replayed["seconds"]
    per_million = 1_000_000 / rate if rate else float("inf")
    print(f"interlock replay: {replayed['events']:,} events in {seconds:.2f} s = "
          f"{rate:,} events/s (target >= {TARGET_EVENTS_PER_S:,}: "
          f"{'met' if rate >= TARGET_EVENTS_PER_S else 'MISSED'}); 1M events in "
          f"{per_million:.1f} s (target <= {TARGET_1M_SECONDS:.0f} s: "
          f"{'met' if per_million <= TARGET_1M_SECONDS else 'MISSED'})")
    print(f"  index: {replayed['subjects']:,} subjects; state digest {replayed['digest']}")
    if options.verify:
        started = time.perf_counter()
        verified = run("verify", "--store", options.store)
        took = time.perf_counter() - started
        chain = verified["chain"]
        print(f"interlock verify: {'ok' if verified['ok'] else 'FAILED'} in {took:.1f} s "
              f"(process included): {chain['chained']:,} events chained, "
              f"{verified['index']['decisions']:,} decisions compared; head "
              f"{chain['head']['link']}")


if __name__ == "__main__":
    main()
