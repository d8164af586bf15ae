"""Index snapshots: an index started from one decides exactly as a replayed one.

A store gets a varied history (population, order, amendment, withdrawal, revocations, lift);
a snapshot is taken part way; later events follow. The index that starts from the snapshot
and catches up must then give the same decision as a full replay for every subject and model,
at several valid times, as of earlier positions (before and after the snapshot's) and as known
at earlier recorded times. A snapshot that does not fit is ignored, never trusted.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.commands import parse_command
from interlock.demo import MODELS, ORDER, ORDER_COMMAND, synthetic_population
from interlock.engine import Engine, open_engine
from projections.snapshot import MAGIC, read_info, write_snapshot
from tests.postgres.support import wait_until

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
START = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)


class Clock:
    """Recorded time: one second per command, from 22:00 UTC on the day of the order."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def history() -> list[list[dict[str, Any]]]:
    """Batches of commands, each one transaction; the snapshot is taken after the second."""
    population = synthetic_population(60)
    subjects = [c["subject"] for c in population.commands if c["type"] == "attest_nationality"]
    later = "2026-11-26T23:30:00+00:00"
    return [
        population.commands,
        [ORDER_COMMAND,
         {"type": "attest_location", "subject": subjects[0], "country": "CN",
          "valid_from": "2026-11-26T20:00:00+00:00", "source": "ip-geo"}],
        [{"type": "amend_directive", "directive": ORDER,
          "exempt": {"subjects": [subjects[1]], "orgs": []}, "effective_at": later},
         {"type": "withdraw_model", "model": "opus-4.8", "effective_at": later},
         {"type": "revoke_attestation", "subject": subjects[2], "kind": "nationality",
          "effective_at": later},
         {"type": "attest_nationality", "subject": "u-new", "citizenships": ["DE"],
          "residencies": [], "valid_from": "1990-01-01T00:00:00+00:00", "source": "kyc"},
         {"type": "grant_entitlement", "entitlement": "plan-u-new", "grantee": {"subject":
          "u-new"}, "models": ["*"], "valid_from": "2026-01-01T00:00:00+00:00"}],
        [{"type": "lift_directive", "directive": ORDER,
          "effective_at": "2026-11-27T02:00:00+00:00"}],
    ]


@pytest.fixture
def built(store_url: str, tmp_path: Path) -> Iterator[tuple[str, Path, list[int]]]:
    """A store with the history, a snapshot after its second batch, and the position after
    each batch."""
    engine = open_engine(store_url, clock=Clock(), catch_up=False)
    positions = []
    snapshot = tmp_path / "index.snapshot"
    try:
        for number, batch in enumerate(history()):
            positions.append(engine.app.apply_all(parse_command(c) for c in batch).position)
            if number == 1:
                engine.catch_up()
                write_snapshot(engine.index, engine.app.recorder, snapshot)
    finally:
        engine.close()
    yield store_url, snapshot, positions


@pytest.fixture
def opened() -> Iterator[list[Engine]]:
    engines: list[Engine] = []
    yield engines
    for engine in engines:
        engine.close()


def test_an_index_from_a_snapshot_decides_as_a_replayed_one(
    built: tuple[str, Path, list[int]], opened: list[Engine]
) -> None:
    store, snapshot, positions = built
    assert read_info(snapshot).position == positions[1]
    restored = open_engine(store, snapshot=snapshot)
    replayed = open_engine(store)
    opened += [restored, replayed]
    assert restored.snapshot is not None and restored.snapshot.position == positions[1]
    assert replayed.snapshot is None
    assert restored.index.position == replayed.index.position == positions[-1]
    assert "u-new" in restored.index.facts.subjects  # caught up past the snapshot

    subjects = sorted(replayed.index.facts.subjects)
    moments = [START - timedelta(hours=1), START + timedelta(minutes=30),
               datetime(2026, 11, 27, 0, 0, tzinfo=UTC), datetime(2026, 11, 27, 3, 0, tzinfo=UTC)]
    as_ofs = [None, 0, positions[0], positions[1] - 1, positions[1], positions[2]]
    known = [None, START + timedelta(seconds=30), START + timedelta(minutes=10)]
    compared = 0
    for subject in subjects:
        for model in [*MODELS, "ghost-1"]:
            for at in moments:
                for as_of in as_ofs:
                    for known_at in known:
                        got = restored.index.decide(subject, model, at, as_of, known_at)
                        want = replayed.index.decide(subject, model, at, as_of, known_at)
                        assert got == want, (subject, model, at, as_of, known_at)
                        compared += 1
    assert compared > 10_000
    effects = {replayed.index.decide(s, "fable-5", moments[2]).effect for s in subjects}
    assert effects == {"allow", "deny"}, "the history should make decisions differ"


def test_a_snapshot_is_only_used_on_the_store_it_came_from(
    built: tuple[str, Path, list[int]], tmp_path: Path, opened: list[Engine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, snapshot, _ = built
    other = f"sqlite:///{tmp_path}/other.db"
    writer = open_engine(other, clock=Clock(START + timedelta(hours=1)), catch_up=False)
    opened.append(writer)
    for batch in history():  # the same commands, recorded at other times
        writer.app.apply_all(parse_command(c) for c in batch)
    with caplog.at_level(logging.WARNING):
        engine = open_engine(other, snapshot=snapshot)
    opened.append(engine)
    assert engine.snapshot is None
    assert engine.index.position == writer.app.position
    assert "another store" in caplog.text


@pytest.mark.parametrize("damage", ["payload", "layout", "magic", "missing"])
def test_an_unusable_snapshot_means_a_full_replay(
    built: tuple[str, Path, list[int]], opened: list[Engine], damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, snapshot, positions = built
    data = snapshot.read_bytes()
    header_end = data.index(b"\n", len(MAGIC)) + 1
    if damage == "payload":
        snapshot.write_bytes(data[:-10] + bytes(10))
    elif damage == "layout":
        header = json.loads(data[len(MAGIC):header_end])
        header["layout"] = "0" * 16
        snapshot.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + data[header_end:])
    elif damage == "magic":
        snapshot.write_bytes(b"x" + data)
    else:
        snapshot.unlink()
    with caplog.at_level(logging.WARNING):
        engine = open_engine(store, snapshot=snapshot)
    opened.append(engine)
    assert engine.snapshot is None
    assert engine.index.position == positions[-1]
    expected = {"payload": "damaged", "layout": "another version", "magic": "not an Interlock",
                "missing": "no index snapshot"}[damage]
    assert expected in caplog.text


def test_an_enforcing_engine_starts_from_a_snapshot_and_enforces_as_one_that_replayed(
    built: tuple[str, Path, list[int]], opened: list[Engine]
) -> None:
    """The embedded kill switch (`serve`) starts from the snapshot too: its reach indexes read
    from the facts, its timetable from the events still to come; the next orders' changes
    are those of an engine that replayed the store."""
    store, snapshot, positions = built
    started = open_engine(store, snapshot=snapshot, enforce=True)
    replayed = open_engine(store, snapshot="off", enforce=True)
    writer = open_engine(store, catch_up=False)
    opened += [started, replayed, writer]
    assert started.snapshot is not None and replayed.snapshot is None
    assert started.index.position == replayed.index.position == positions[-1]
    order = {**ORDER_COMMAND, "directive": "second-order", "effective_at": None,
             "received_at": datetime.now(UTC).isoformat()}
    published = []
    for command in (order, {"type": "lift_directive", "directive": "second-order"}):
        writer.app.apply(parse_command(command))
        for engine in (started, replayed):
            assert engine.revocations is not None
            before = engine.revocations.last
            engine.catch_up()
            published.append([{k: v for k, v in record.record.items() if k != "emitted_at"}
                              for _, record in engine.revocations.after(before)])
    revoked, revoked_again, restored, restored_again = published
    assert revoked and restored, "the order revokes and its lift restores"
    assert (revoked, restored) == (revoked_again, restored_again)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INTERLOCK, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_snapshot_command_and_option(
    built: tuple[str, Path, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, positions = built
    target = tmp_path / "cli.snapshot"
    written = run("snapshot", str(target), "--store", store)
    assert written.returncode == 0, written.stderr
    report = json.loads(written.stdout)
    assert report["position"] == positions[-1] == read_info(target).position
    question = ["decide", "u-new", "fable-5", "--at", "2026-11-27T00:00:00+00:00", "--json",
                "--store", store]
    from_snapshot = run("--snapshot", str(target), *question)
    assert from_snapshot.returncode == 0 and from_snapshot.stderr == ""
    monkeypatch.setenv("INTERLOCK_SNAPSHOT", str(tmp_path / "absent.snapshot"))
    replayed = run(*question)
    assert "no index snapshot" in replayed.stderr
    assert json.loads(from_snapshot.stdout) == json.loads(replayed.stdout)
    assert json.loads(replayed.stdout)["effect"] == "deny"


def test_snapshot_every_keeps_the_snapshot_fresh(
    built: tuple[str, Path, list[int]], tmp_path: Path
) -> None:
    store, _, positions = built
    target = tmp_path / "fresh.snapshot"
    process = subprocess.Popen(
        [INTERLOCK, "snapshot", str(target), "--every", "1", "--store", store],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: target.exists(), timeout=30)
        assert read_info(target).position == positions[-1]
        writer = open_engine(store, catch_up=False)
        try:
            later = writer.app.apply(parse_command(
                {"type": "register_model", "model": "haiku-9", "family": "haiku"}
            )).position
        finally:
            writer.close()
        wait_until(lambda: read_info(target).position == later, timeout=10, interval=0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["position"] for line in lines] == [positions[-1], later]
