"""bench/scale.py runs end to end at a small size: every figure gets its row (no timings are
asserted; they belong to the benchmark's output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ROWS = (
    "population: 2,000 subjects",
    "index memory per subject",
    "rebuild from SQLite",
    "  read (rows",
    "  decode (events",
    "  apply (FactBase",
    "rebuild from a snapshot",
    "decide vs cedarpy, 1,000 subjects: decision median, warm (a)",
    "decide vs cedarpy, 1,000 subjects: single-call 1/median: warm (a) vs (h)",
    "decide vs cedarpy, 1,000 subjects: single-call 1/median: computed (b) vs (h)",
    "  Interlock and Cedar agree",
    "kill switch embedded, p50 / p99 of 1",
    "decision flip, embedded server",
)


def test_scale_bench_at_2000_subjects_without_kafka_prints_every_row(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "scale-2k"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scale.py"), "--subjects", "2000", "--cache",
         str(cache), "--runs", "1", "--skip-kafka", "--cedar-subjects", "1000"],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("Interlock at 2,000 subjects"):]
    for row in ROWS:
        assert f"\n{row}" in table, f"no row {row!r} in:\n{table}"
    assert "replica" not in table  # Kafka skipped
    assert sorted(p.name for p in cache.iterdir()) == ["population.json", "store.db"]
    assert not list(cache.parent.glob(".*partial*"))  # built under a temporary name, renamed
