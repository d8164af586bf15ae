"""`verify` and `replay`: the hash chain over the log names the first tampered position; the
rebuilt index matches the live one."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from interlock import persistence
from interlock.cli import app
from interlock.engine import open_engine
from projections import audit, chain
from tests.unit.support import Harness, grant, nationality, register

runner = CliRunner()


def verify(path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["verify", "--json", *extra, "--store", f"sqlite:///{path}"])
    return result.exit_code, json.loads(result.stdout), result.stderr


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, params).fetchall()


def change(path: Path, sql: str, *params: Any) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql, params)


def first_with(path: Path, needle: bytes) -> int:
    return next(rowid for rowid, state in rows(path, "SELECT rowid, state FROM stored_events")
                if needle in state)


def test_an_honest_store_verifies(demo_copy: Path) -> None:
    code, data, _ = verify(demo_copy)
    assert code == 0, data
    assert data["ok"] and data["chain"]["ok"] and data["index"]["ok"]
    events = rows(demo_copy, "SELECT COUNT(*), MAX(rowid) FROM stored_events")[0]
    assert data["chain"]["events"] == data["chain"]["chained"] == events[0]
    assert data["chain"]["head"]["position"] == events[1]
    assert data["index"]["decisions"] > 0
    head = data["chain"]["head"]["link"]
    assert verify(demo_copy, "--expect-head", head)[0] == 0
    code, data, _ = verify(demo_copy, "--expect-head", "00" * 32)
    assert code == 1 and data["head_matches"] is False


def test_a_head_kept_earlier_still_holds_after_later_events(demo_copy: Path) -> None:
    """--expect-head P:LINK compares with the link recomputed at P, not with today's head."""
    _, earlier, _ = verify(demo_copy)
    kept = earlier["chain"]["head"]
    engine = open_engine(f"sqlite:///{demo_copy}", catch_up=False)
    from domain.commands import parse_command

    engine.app.apply(parse_command(nationality("u-late", ["DE"])))
    engine.close()
    code, data, _ = verify(demo_copy, "--expect-head", f"{kept['position']}:{kept['link']}")
    assert code == 0 and data["head_matches"] is True and data["head_problem"] is None
    assert data["chain"]["head"]["position"] > kept["position"]
    code, data, stderr = verify(demo_copy, "--expect-head", kept["link"])
    assert code == 1 and data["head_matches"] is False, "a bare link is today's head"
    code, data, stderr = verify(demo_copy, "--expect-head", f"{kept['position']}:{'0' * 64}")
    assert code == 1 and "was rewritten" in data["head_problem"] and "--expect-head" in stderr
    beyond = data["chain"]["head"]["position"] + 5
    code, data, _ = verify(demo_copy, "--expect-head", f"{beyond}:{kept['link']}")
    assert code == 1 and f"no event at position {beyond}" in data["head_problem"]
    for malformed in ("12:abc", "x:" + "0" * 64, "0" * 63):
        result = runner.invoke(app, ["verify", "--expect-head", malformed,
                                     "--store", f"sqlite:///{demo_copy}"])
        assert result.exit_code == 2 and "--expect-head" in result.stderr


def test_an_edited_byte_is_named(demo_copy: Path) -> None:
    position = first_with(demo_copy, b"passport-kyc")
    (state,) = rows(demo_copy, "SELECT state FROM stored_events WHERE rowid = ?", position)[0]
    change(demo_copy, "UPDATE stored_events SET state = ? WHERE rowid = ?",
           state.replace(b"passport-kyc", b"passport-kyd", 1), position)
    code, data, stderr = verify(demo_copy)
    assert code == 1
    assert data["chain"]["first_problem"] == {
        "position": position, "problem": "altered",
        "detail": "the stored bytes (topic, state or key) differ from those chained"}
    assert f"position {position}" in stderr
    human = runner.invoke(app, ["verify", "--store", f"sqlite:///{demo_copy}"])
    assert human.exit_code == 1 and f"{position:,}" in human.stdout


def test_an_edit_that_breaks_the_event_is_named(demo_copy: Path) -> None:
    """The live index cannot even be built; verify still names the position."""
    position = first_with(demo_copy, b"hr-feed")
    (state,) = rows(demo_copy, "SELECT state FROM stored_events WHERE rowid = ?", position)[0]
    change(demo_copy, "UPDATE stored_events SET state = ? WHERE rowid = ?",
           b"[" + state[1:], position)
    code, data, _ = verify(demo_copy)
    assert code == 1 and data["chain"]["first_problem"]["position"] == position
    assert not data["index"]["ok"] and str(position) in data["index"]["difference"]


def test_a_deleted_event_is_named(demo_copy: Path) -> None:
    position = first_with(demo_copy, b"hr-feed") + 1
    change(demo_copy, "DELETE FROM stored_events WHERE rowid = ?", position)
    code, data, _ = verify(demo_copy)
    assert code == 1
    assert data["chain"]["first_problem"]["position"] == position
    assert data["chain"]["first_problem"]["problem"] == "removed"


def test_two_swapped_events_are_named(demo_copy: Path) -> None:
    first, second = 40, 47
    a = rows(demo_copy, "SELECT topic, state FROM stored_events WHERE rowid = ?", first)[0]
    b = rows(demo_copy, "SELECT topic, state FROM stored_events WHERE rowid = ?", second)[0]
    assert a != b
    change(demo_copy, "UPDATE stored_events SET topic = ?, state = ? WHERE rowid = ?", *b, first)
    change(demo_copy, "UPDATE stored_events SET topic = ?, state = ? WHERE rowid = ?", *a, second)
    code, data, _ = verify(demo_copy)
    assert code == 1
    problems = data["chain"]["problems"]
    assert data["chain"]["first_problem"]["position"] == first
    assert [(p["position"], p["problem"]) for p in problems[:2]] == [
        (first, "reordered"), (second, "reordered")]
    assert str(second) in problems[0]["detail"]


def test_an_edited_chain_row_is_named(demo_copy: Path) -> None:
    change(demo_copy, "UPDATE stored_events_chain SET link = ? WHERE position = 30", bytes(32))
    code, data, _ = verify(demo_copy)
    assert code == 1
    assert data["chain"]["first_problem"]["position"] in (30, 31)


def test_a_store_without_a_chain_is_sealed_by_the_operator_not_by_a_write(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Events written before the chain existed look exactly like events whose chain was
    dropped: the next chained write refuses them, naming the first; `interlock seal` is the
    operator's explicit act that links them, after which writes go on."""
    store = f"sqlite:///{tmp_path / 'legacy.db'}"
    monkeypatch.setenv("PROCESS_RECORDER_TOPIC", "eventsourcing.sqlite:SQLiteProcessRecorder")
    import interlock.config as config

    plain = {**config.CHAINED_RECORDERS, "sqlite": "eventsourcing.sqlite:SQLiteProcessRecorder"}
    monkeypatch.setattr(config, "CHAINED_RECORDERS", plain)
    from domain.commands import parse_command

    legacy = open_engine(store)
    legacy.app.apply_all(parse_command(c) for c in (register("fable-5", "fable"),
                                                    nationality("u-1", ["US"])))
    legacy.close()
    assert verify(tmp_path / "legacy.db")[0] == 1, "no chain yet"
    monkeypatch.undo()
    chained = open_engine(store)
    assert isinstance(chained.app.recorder, persistence.ChainedSQLiteProcessRecorder)
    with pytest.raises(chain.ChainRefused) as refused:
        chained.app.apply(parse_command(grant("e-1", subject="u-1")))
    assert (refused.value.position, refused.value.problem) == (1, "unchained")
    assert chained.app.position == 3
    sealed = runner.invoke(app, ["seal", "--json", "--store", store])
    assert sealed.exit_code == 0 and json.loads(sealed.stdout) == {"sealed": 3, "from": 1,
                                                                    "to": 3}
    chained.app.apply(parse_command(grant("e-1", subject="u-1")))
    chained.close()
    code, data, _ = verify(tmp_path / "legacy.db")
    assert code == 0 and data["chain"]["chained"] == data["chain"]["events"] == 4


def test_an_index_that_differs_is_named(h: Harness) -> None:
    h.apply(register("fable-5", "fable"), nationality("u-1", ["US"]), grant("e-1", subject="u-1"))
    rebuilt = audit.Rebuilt(to_event=h.engine.app.mapper.to_domain_event)
    audit.verify_chain(h.engine.app, on_event=rebuilt.feed)
    live = h.engine.index
    same = audit.compare_indexes(live, None, rebuilt, h.now)
    assert same.ok and same.live_digest == same.rebuilt_digest and same.decisions == 1
    live.facts.entitlements["e-1"].revocations.append((h.now, 2))
    different = audit.compare_indexes(live, None, rebuilt, h.now)
    assert not different.ok and different.difference is not None
    assert different.difference.startswith("entitlements: e-1")


def test_replay_up_to_a_position_or_a_time(demo_db: Path, demo: Any) -> None:
    store = f"sqlite:///{demo_db}"
    whole = json.loads(runner.invoke(app, ["replay", "--json", "--store", store]).stdout)
    assert whole["position"] == demo.app.position and whole["events_per_second"] > 0
    assert whole["digest"] == audit.state_digest(demo.index.facts).digest
    part = json.loads(runner.invoke(app, ["replay", "--as-of", "100", "--json",
                                          "--store", store]).stdout)
    assert part["position"] == part["events"] == 100
    order = demo.index.facts.directives["bis-2026-0417"]
    moment = order.recorded_at + timedelta(seconds=1)
    until = json.loads(runner.invoke(app, ["replay", "--until", moment.isoformat(), "--json",
                                           "--store", store]).stdout)
    assert until["position"] == demo.index.facts.position_known_at(moment) >= order.position
    human = runner.invoke(app, ["replay", "--store", store])
    assert human.exit_code == 0 and "events/s" in human.stdout
    both = runner.invoke(app, ["replay", "--as-of", "1", "--until", moment.isoformat(),
                               "--store", store])
    assert both.exit_code == 2


@pytest.mark.postgres
def test_the_chain_on_postgresql(fresh_postgres_db: str) -> None:
    """Same transaction as the events, under the store's table lock; swaps are named."""
    import psycopg

    from domain.commands import parse_command

    engine = open_engine(fresh_postgres_db)
    assert isinstance(engine.app.recorder, persistence.ChainedPostgresProcessRecorder)
    commands = [register("fable-5", "fable")] + [
        c for n in range(20) for c in (nationality(f"u-{n}", ["DE"]),
                                       grant(f"e-{n}", subject=f"u-{n}"))]
    engine.app.apply_all(parse_command(c) for c in commands[:15])
    engine.app.apply_all(parse_command(c) for c in commands[15:])
    report = audit.verify_chain(engine.app)
    assert report.ok and report.kept and report.chained == report.events == engine.app.position
    assert audit.ChainTable(engine.app.recorder).head() == (
        report.head_position, bytes.fromhex(report.head_link))
    assert audit.replay(engine.app).events == report.events
    table = engine.app.recorder.events_table_name
    with psycopg.connect(fresh_postgres_db, autocommit=True) as db:
        a = db.execute(f"SELECT topic, state FROM {table} WHERE notification_id = 5").fetchone()
        b = db.execute(f"SELECT topic, state FROM {table} WHERE notification_id = 9").fetchone()
        db.execute(f"UPDATE {table} SET topic = %s, state = %s WHERE notification_id = 5", b)
        db.execute(f"UPDATE {table} SET topic = %s, state = %s WHERE notification_id = 9", a)
    tampered = audit.verify_chain(engine.app)
    assert tampered.first is not None
    assert (tampered.first.position, tampered.first.problem) == (5, "reordered")
    engine.close()
