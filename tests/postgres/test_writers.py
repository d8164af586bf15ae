"""Two processes writing to one PostgreSQL store keep one order.

Each process has its own application and applies its commands one transaction at a time, both
starting together. The store must hold every command once, at contiguous, strictly increasing
positions, each writer's commands in its own order, and an index built from the store must see
both writers' events in position order. (Writers touching the same aggregate at the same time
are refused by optimistic concurrency instead; here they touch disjoint subjects.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from domain.aggregates import CommandReceipt, Subject
from interlock.engine import open_engine
from projections.access_index import AccessIndex
from projections.store_follower import StoreFollower
from tests.postgres.support import SETUP, T0, parsed

pytestmark = pytest.mark.postgres

COMMANDS = 150
"""Per writer: three events each (subject registered, employer attested, receipt)."""

WRITER = """
import json, sys, time
from pathlib import Path
from domain.commands import parse_command
from interlock.engine import open_engine

url, name, count, directory = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
app = open_engine(url, catch_up=False).app
commands = [parse_command({
    "type": "attest_employer", "subject": f"{name}-{i:04d}", "org": "acme",
    "valid_from": sys.argv[5], "source": "hr-feed", "command_id": f"{name}-{i:04d}",
}) for i in range(count)]
(directory / f"{name}.ready").touch()
while not (directory / "go").exists():
    time.sleep(0.001)
positions = [app.apply(command).position for command in commands]
again = sum(app.apply(command).applied for command in commands)
print(json.dumps({"positions": positions, "applied_again": again}))
app.close()
"""


def test_two_writer_processes_keep_one_consistent_order(
    fresh_postgres_db: str, tmp_path: Path
) -> None:
    setup = open_engine(fresh_postgres_db, catch_up=False)
    base = setup.app.apply_all(parsed(SETUP)).position
    setup.close()
    writers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WRITER, fresh_postgres_db, name, str(COMMANDS),
             str(tmp_path), T0],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("a", "b")
    }
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"{name}.ready").exists() for name in writers):
        assert time.monotonic() < deadline, "writers did not start"
        assert all(w.poll() is None for w in writers.values()), [
            w.communicate()[1] for w in writers.values()
        ]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = {}
    for name, process in writers.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results[name] = json.loads(out)

    for result in results.values():
        assert result["applied_again"] == 0
        assert result["positions"] == sorted(set(result["positions"]))

    reader = open_engine(fresh_postgres_db, catch_up=False)
    try:
        total = base + 3 * COMMANDS * len(writers)
        notifications = reader.app.recorder.select_notifications(start=1, limit=total + 10)
        assert [n.id for n in notifications] == list(range(1, total + 1))
        events = [reader.app.mapper.to_domain_event(n) for n in notifications]
        receipts = [e.command_id for e in events if isinstance(e, CommandReceipt.Received)]
        assert sorted(receipts) == sorted(f"{w}-{i:04d}" for w in writers
                                          for i in range(COMMANDS))
        registered = [e.subject for e in events if isinstance(e, Subject.Registered)]
        for name in writers:
            own = [s for s in registered if s.startswith(f"{name}-")]
            assert own == [f"{name}-{i:04d}" for i in range(COMMANDS)]
        turns = sum(1 for x, y in pairwise(registered) if x[0] != y[0])
        assert turns > 1, "the writers did not interleave; the test proved nothing"

        index = AccessIndex()
        assert StoreFollower(reader.app, index).catch_up() == total
        positions = {e.subject: n.id for e, n in zip(events, notifications, strict=True)
                     if isinstance(e, Subject.Registered)}
        assert {s: f.position for s, f in index.facts.subjects.items()} == positions
    finally:
        reader.close()


def test_a_writer_with_a_pool_of_one_connection(fresh_postgres_db: str) -> None:
    """A write transaction holds the table lock while it reads its aggregates: it reads them
    on the connection it holds, so one connection is enough (no wait for a second)."""
    from projections.audit import verify_chain

    engine = open_engine(f"{fresh_postgres_db}?pool_size=1&max_overflow=0", catch_up=False)
    try:
        engine.app.apply_all(parsed(SETUP))
        engine.app.apply_all(parsed([{**SETUP[2], "entitlement": "e-2"}]))
        assert engine.app.position == 4 and verify_chain(engine.app).ok
    finally:
        engine.close()
