"""A command does the work its answer needs and no more: `import interlock.cli` loads none of
the engine, `apply` reads only the aggregates its commands name (never the log, never the
index), and the read commands start from the index snapshot kept beside the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.sqlite import SQLiteApplicationRecorder
from typer.testing import CliRunner

from interlock.cli import app
from interlock.config import kept_snapshot
from projections.access_index import AccessIndex
from projections.snapshot import read_info
from projections.store_follower import StoreFollower
from tests.http.http_support import AFTER_ORDER, ORDER, SETUP

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


class Runner(CliRunner):
    """Each invocation in an environment of its own: `--snapshot` passes its value on through
    INTERLOCK_SNAPSHOT (to serve's workers), which must not outlive the invocation here."""

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        return super().invoke(*args, env={"INTERLOCK_SNAPSHOT": "", **kwargs.pop("env", {})},
                              **kwargs)


runner = Runner()


def lines(*commands: dict[str, Any]) -> str:
    return "".join(json.dumps(command) + "\n" for command in commands)


def population(subjects: int) -> list[dict[str, Any]]:
    return [{"type": "attest_employer", "subject": f"u-{n:04}", "org": "acme",
             "valid_from": "2026-01-01T00:00:00Z", "source": "hr-feed"}
            for n in range(subjects)]


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/store.db"
    result = runner.invoke(app, ["apply", "-", "--store", url],
                           input=lines(*SETUP, *population(300), ORDER))
    assert result.exit_code == 0, result.output
    return url


def test_importing_the_cli_loads_no_engine_no_rich_and_no_database_driver() -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import sys, interlock.cli; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True).stdout.split()
    heavy = {"psycopg", "eventsourcing", "pydantic", "rich", "cryptography", "sqlite3",
             "domain.commands", "interlock.engine", "projections"}
    assert not [name for name in found if name in heavy or name.split(".")[0] in heavy]


def test_apply_reads_no_log_and_builds_no_index(
        store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError("apply replayed the store into an index")

    read = rows_read(monkeypatch)
    monkeypatch.setattr(StoreFollower, "catch_up", refused)
    monkeypatch.setattr(AccessIndex, "apply", refused)
    monkeypatch.setattr(AccessIndex, "apply_all", refused)
    one = {"type": "attest_employer", "subject": "u-0007", "org": "initech",
           "valid_from": "2026-02-01T00:00:00Z", "source": "hr-feed"}
    result = runner.invoke(app, ["apply", "-", "--store", store], input=lines(one))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["applied"] == 1
    # The last event's recorded time, read once per transaction: one notification, not 300.
    assert sum(read) <= 1, read


def kept(store: str) -> Path:
    return Path(store.removeprefix("sqlite:///") + ".snapshot")


def rows_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of notifications each read of the log by position returns, from here on."""
    read: list[int] = []
    select = SQLiteApplicationRecorder.select_notifications

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        found = select(self, *args, **kwargs)
        read.append(len(found))
        return found

    monkeypatch.setattr(SQLiteApplicationRecorder, "select_notifications", counted)
    return read


def replayed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The position of every event applied to any access index made from here on (however
    the follower reads them), told through the index's own subscription."""
    applied: list[int] = []
    made = AccessIndex.__init__

    def counting(self: AccessIndex, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        self.subscribe(lambda event: applied.append(event.position))

    monkeypatch.setattr(AccessIndex, "__init__", counting)
    return applied


def answer(output: str) -> Any:
    """A read command's JSON answer, without the valid time `history` takes as now."""
    data = json.loads(output)
    for decision in data.get("decisions", ()):
        decision.pop("at")
    return data


READS = [
    ["decide", "u-de", "fable-5", "--at", AFTER_ORDER, "--json"],
    ["explain", "u-de", "fable-5", "--at", AFTER_ORDER, "--json"],
    ["history", "u-0007", "--json"],
    ["impact", "bis-2026-0417", "--json"],
    ["diff", "--from", "2026-11-26T00:00:00+00:00", "--to", AFTER_ORDER, "--json"],
]


@pytest.mark.parametrize("command", READS, ids=lambda c: c[0])
def test_a_read_starts_from_the_snapshot_beside_the_store_with_the_same_answer(
        command: list[str], store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    applied = replayed(monkeypatch)
    full = runner.invoke(app, [*command, "--store", store, "--snapshot", "off"])
    assert full.exit_code == 0, full.output
    last = json.loads(runner.invoke(app, ["position", "--json", "--store", store]).stdout)
    assert len(applied) == last["position"] > 600
    assert not kept(store).exists()  # off: nothing read, nothing written
    monkeypatch.setattr("interlock.engine.SNAPSHOT_REFRESH_EVENTS", 100)
    first = runner.invoke(app, [*command, "--store", store])
    assert first.exit_code == 0, first.output
    info = read_info(kept(store))  # the 600 events replayed were worth a snapshot
    assert info.position == last["position"]
    applied.clear()
    again = runner.invoke(app, [*command, "--store", store])
    assert again.exit_code == 0, again.output
    assert applied == []  # started from the snapshot: nothing replayed
    assert answer(full.stdout) == answer(first.stdout) == answer(again.stdout)


def test_a_stale_snapshot_is_refreshed_once_its_tail_is_long(
        store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.invoke(app, ["snapshot", "--store", store]).exit_code == 0
    taken = read_info(kept(store)).position
    decide = ["decide", "u-0001", "fable-5", "--json", "--store", store]
    monkeypatch.setattr("interlock.engine.SNAPSHOT_REFRESH_EVENTS", 30)
    more = runner.invoke(app, ["apply", "-", "--store", store],
                         input=lines(*population(310)[300:]))
    assert more.exit_code == 0, more.output
    assert runner.invoke(app, decide).exit_code == 0
    assert read_info(kept(store)).position == taken  # 20 events behind: read, kept
    assert runner.invoke(app, ["apply", "-", "--store", store],
                         input=lines(*population(320)[310:])).exit_code == 0
    applied = replayed(monkeypatch)
    decided = runner.invoke(app, decide)
    assert decided.exit_code == 0, decided.output
    assert applied == list(range(taken + 1, taken + 41))  # the tail only
    assert read_info(kept(store)).position == taken + 40  # 40 behind: written afresh


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INTERLOCK, *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "INTERLOCK_SNAPSHOT": "", **(env or {})})


@pytest.mark.parametrize("damage", ["payload", "foreign"])
def test_a_snapshot_that_does_not_fit_is_ignored_with_a_note_and_replaced(
        damage: str, store: str, tmp_path: Path) -> None:
    decide = ["decide", "u-de", "fable-5", "--at", AFTER_ORDER, "--json", "--store", store]
    truth = run(*decide, "--snapshot", "off")
    assert run("snapshot", "--store", store).returncode == 0
    path = kept(store)
    if damage == "payload":
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
    else:  # the snapshot of another store, at a position this one also holds
        other = f"sqlite:///{tmp_path}/other.db"
        assert runner.invoke(app, ["apply", "-", "--store", other],
                             input=lines(*SETUP, *population(300), ORDER)).exit_code == 0
        assert run("snapshot", str(path), "--store", other).returncode == 0
    bypassed = run(*decide, env={"INTERLOCK_SNAPSHOT": "off"})
    assert bypassed.stderr == "" and bypassed.stdout == truth.stdout
    noted = run(*decide)
    assert noted.returncode == 0 and noted.stdout == truth.stdout
    why = "damaged" if damage == "payload" else "another store"
    assert "ignoring index snapshot" in noted.stderr and why in noted.stderr, noted.stderr
    # Rewritten at once, since it would be refused on every start: the next read is quiet.
    quiet = run(*decide)
    assert quiet.stderr == "" and quiet.stdout == truth.stdout
    assert read_info(path).position > 0


def test_a_missing_store_is_still_refused_and_no_snapshot_written(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/absent/store.db"
    for command in READS:
        result = runner.invoke(app, [*command, "--store", store])
        assert result.exit_code == 2 and "does not exist" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_where_the_snapshot_is_kept() -> None:
    assert kept_snapshot("sqlite:///data/s.db") == Path("data/s.db.snapshot")
    assert kept_snapshot("sqlite:///data/s.db", "elsewhere.bin") == Path("elsewhere.bin")
    assert kept_snapshot("sqlite:///data/s.db", "off") is None
    assert kept_snapshot("postgresql://u:p@localhost/db") is None  # unless one is named
    assert kept_snapshot("postgresql://u:p@localhost/db", "/v/i.snapshot") == Path("/v/i.snapshot")
    assert kept_snapshot("memory:") is None


def test_a_read_command_that_built_an_index_still_exits_with_its_status(store: str) -> None:
    answered = run("decide", "u-de", "fable-5", "--at", AFTER_ORDER, "--json", "--store", store)
    assert answered.returncode == 0 and json.loads(answered.stdout)["effect"] == "deny"
    unknown = run("history", "u-nobody", "--store", store)
    assert unknown.returncode == 1 and "unknown subject 'u-nobody'" in unknown.stderr
    assert unknown.stdout == ""


def test_a_named_snapshot_of_another_store_is_used_by_neither_and_left_alone(
        store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = f"sqlite:///{tmp_path}/other.db"
    assert runner.invoke(app, ["apply", "-", "--store", other],
                         input=lines(*SETUP, ORDER)).exit_code == 0
    shared = tmp_path / "shared.snapshot"
    assert runner.invoke(app, ["snapshot", str(shared), "--store", other]).exit_code == 0
    theirs = read_info(shared)
    monkeypatch.setattr("interlock.engine.SNAPSHOT_REFRESH_EVENTS", 1)
    decided = runner.invoke(app, ["decide", "u-0001", "fable-5", "--json", "--store", store,
                                  "--snapshot", str(shared)])
    assert decided.exit_code == 0, decided.output
    assert json.loads(decided.stdout)["as_of"] > theirs.position  # a full replay of its own
    assert read_info(shared) == theirs  # the other store's processes still start from it
    assert not kept(store).exists()
