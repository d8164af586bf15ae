"""A synthetic population's store, built through the application and cached on disk.

    .venv/bin/python bench/population.py [--subjects 1000000] [--cache DIR]

The store is `interlock.demo.synthetic_population(N)` (about 3 events per subject) applied by
`Interlock` in large batches (`CommandBatch`, one transaction per `FLUSH_EVERY` commands): the
same commands, aggregates, hash chain and recorder as `interlock apply`, in fewer commits. It is
written under a temporary name beside the cache directory and renamed when complete, so a
reader either finds a whole store or none; readers open it read-only and never write to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from domain.commands import parse_command  # noqa: E402
from interlock.demo import synthetic_population  # noqa: E402
from interlock.engine import open_engine  # noqa: E402

FLUSH_EVERY = 20_000
"""Commands per transaction: past a few thousand, commits stop mattering (measured: 1,000 →
6.8k commands/s, 10,000 → 7.9k)."""
STORE_FILE = "store.db"
MANIFEST_FILE = "population.json"


@dataclass(frozen=True)
class Built:
    """What a cached store holds and how fast it was written."""

    subjects: int
    commands: int
    events: int
    seconds: float
    built_at: str

    @property
    def commands_per_s(self) -> float:
        return self.commands / self.seconds if self.seconds else 0.0


def store_url(directory: Path) -> str:
    return f"sqlite:///{directory / STORE_FILE}"


def build(directory: Path, subjects: int, report: bool = False) -> Built:
    """Applies the population to a new store in `directory` (which must not hold one)."""
    population = synthetic_population(subjects)
    engine = open_engine(store_url(directory), catch_up=False)
    started = time.perf_counter()
    try:
        with engine.app.batch(flush_every=FLUSH_EVERY) as batch:
            for number, command in enumerate(population.commands, start=1):
                batch.apply(parse_command(command))
                if report and number % 200_000 == 0:
                    rate = number / (time.perf_counter() - started)
                    sys.stderr.write(f"  {number:,} of {len(population.commands):,} commands "
                                     f"({rate:,.0f}/s)\n")
        events = engine.app.position
    finally:
        engine.close()
    return Built(subjects, len(population.commands), events, time.perf_counter() - started,
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def cached(cache: Path, subjects: int, report: bool = False) -> tuple[str, Built, bool]:
    """The store URL of `subjects` subjects in `cache`, building it first when absent; also
    whether this call built it. A cache holding another size is an error, not overwritten."""
    manifest = cache / MANIFEST_FILE
    if manifest.exists():
        built = Built(**json.loads(manifest.read_text()))
        if built.subjects != subjects:
            raise SystemExit(f"{cache} holds {built.subjects:,} subjects, not {subjects:,}; "
                             "name another --cache")
        return store_url(cache), built, False
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        built = build(partial, subjects, report)
        (partial / MANIFEST_FILE).write_text(json.dumps(asdict(built), indent=2) + "\n")
        partial.rename(cache)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return store_url(cache), built, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, required=True)
    options = parser.parse_args()
    url, built, fresh = cached(options.cache, options.subjects, report=True)
    print(f"{url}: {built.subjects:,} subjects, {built.events:,} events "
          f"({'built' if fresh else 'cached'}: {built.commands:,} commands in "
          f"{built.seconds:.0f} s = {built.commands_per_s:,.0f} commands/s)")


if __name__ == "__main__":
    main()
