"""Attacks on the record, on SQLite and PostgreSQL.

An attacker with write access to the database edits the log behind Interlock's back. What the
next legitimate write would otherwise launder (seal into the chain as if it had written it), it
refuses instead, naming the position, and stores nothing; what it does not refuse (an edit
deeper in the log), `verify` still names after it. Recorded time agrees with position when a
writer waited for the lock; concurrent writers on one store wait and both succeed.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domain.aggregates import Subject
from domain.commands import parse_command
from interlock.cli import app
from interlock.engine import open_engine
from projections import audit
from projections import chain as hash_chain
from tests.postgres.support import SETUP, T0, employee, parsed

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
runner = CliRunner()


@dataclass
class Store:
    """A store and the attacker's raw access to its tables."""

    url: str
    kind: str
    events: str = ""
    chain: str = ""

    @property
    def id(self) -> str:
        return "rowid" if self.kind == "sqlite" else "notification_id"

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Runs one statement as the attacker (autocommit), `?` placeholders on both."""
        statement = statement.format(events=self.events, chain=self.chain, id=self.id)
        if self.kind == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
                return db.execute(statement, params).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            cursor = db.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def head(self) -> int:
        return self.sql("SELECT MAX({id}) FROM {events}")[0][0]

    def count(self) -> int:
        return self.sql("SELECT COUNT(*) FROM {events}")[0][0]

    def state(self, position: int) -> bytes:
        return bytes(self.sql("SELECT state FROM {events} WHERE {id} = ?", position)[0][0])

    def edit(self, position: int, old: bytes, new: bytes) -> None:
        state = self.state(position)
        assert old in state
        self.sql("UPDATE {events} SET state = ? WHERE {id} = ?",
                 state.replace(old, new, 1), position)

    def rechain(self) -> None:
        """The attacker's full power: recompute every link over the events as they now are."""
        rows = self.sql("SELECT {id}, originator_id, originator_version, topic, state "
                        "FROM {events} ORDER BY {id}")
        link = hash_chain.GENESIS
        chain = []
        for position, originator, version, topic, state in rows:
            digest = hash_chain.event_digest(topic, bytes(state))
            link = hash_chain.chain_link(link, position, originator, version, digest)
            chain.append((position, digest, link))
        self.sql("DELETE FROM {chain}")
        for row in chain:
            self.sql("INSERT INTO {chain} VALUES (?, ?, ?)", *row)


STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store holding the scale-out tests' setup and three employees (14 events)."""
    url = (f"sqlite:///{tmp_path}/store.db" if request.param == "sqlite"
           else str(request.getfixturevalue("fresh_postgres_db")))
    engine = open_engine(url, catch_up=False)
    recorder = engine.app.recorder
    engine.app.apply_all(parsed(SETUP + employee("u-1", "DE") + employee("u-2", "US")
                                + employee("u-3", "FR")))
    engine.close()
    yield Store(url, request.param, recorder.events_table_name, recorder.chain_table_name)


def verify(store: Store, *extra: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["verify", "--json", "--no-decisions", *extra,
                                 "--store", store.url])
    return result.exit_code, json.loads(result.stdout)


NEXT = {"type": "attest_location", "subject": "u-1", "country": "FR", "valid_from": T0,
        "source": "ip-geo"}
"""The next legitimate command, the write that must not launder the attack."""


# ------------------------------------------------------------------- the writer refuses


def insert_after_head(store: Store) -> int:
    """A forged next event on an aggregate, appended to the events table."""
    head = store.head()
    store.sql("INSERT INTO {events} (originator_id, originator_version, topic, state) "
              "SELECT originator_id, originator_version + 1, topic, state FROM {events} "
              "WHERE {id} = ?", head)
    return store.head()


def edit_and_drop_chain(store: Store) -> int:
    """Edit an early fact, then drop the chain that would show it."""
    store.edit(_position_with(store, b'"DE"'), b'"DE"', b'"US"')
    store.sql("DROP TABLE {chain}")
    return 1


def empty_chain(store: Store) -> int:
    store.sql("DELETE FROM {chain}")
    return 1


def truncate_chain_tail(store: Store) -> int:
    """Forget the last three links, then edit what they sealed."""
    head = store.head()
    store.sql("DELETE FROM {chain} WHERE position > ?", head - 3)
    store.edit(_position_with(store, b'"FR"'), b'"FR"', b'"DE"')
    return head - 2


def edit_head_event(store: Store) -> int:
    head = store.head()
    store.edit(head, b"passport-kyc", b"passport-kyd")
    return head


def edit_head_key(store: Store) -> int:
    head = store.head()
    store.sql("UPDATE {events} SET originator_version = originator_version + 7 WHERE {id} = ?",
              head)
    return head


def edit_head_link(store: Store) -> int:
    head = store.head()
    store.sql("UPDATE {chain} SET link = ? WHERE position = ?", bytes(32), head)
    return head


def delete_head_event(store: Store) -> int:
    """Remove the last fact but keep its link: SQLite then hands its position to the next
    write, PostgreSQL a new one."""
    head = store.head()
    store.sql("DELETE FROM {events} WHERE {id} = ?", head)
    return head


def _position_with(store: Store, needle: bytes) -> int:
    rows = store.sql("SELECT {id}, state FROM {events} ORDER BY {id}")
    return next(position for position, state in rows if needle in bytes(state))


def retype_head_state(store: Store) -> int:
    """The head's bytes unchanged, stored as text (SQLite keeps what it is given; PostgreSQL
    casts it back to bytea, so there the head is altered by a byte instead)."""
    head = store.head()
    if store.kind == "sqlite":
        store.sql("UPDATE {events} SET state = CAST(state AS TEXT) WHERE {id} = ?", head)
    else:
        store.edit(head, b"passport-kyc", b"passport-kyd")
    return head


REFUSED = [insert_after_head, edit_and_drop_chain, empty_chain, truncate_chain_tail,
           edit_head_event, edit_head_key, edit_head_link, delete_head_event, retype_head_state]


@pytest.mark.parametrize("attack", REFUSED, ids=lambda attack: attack.__name__)
@pytest.mark.parametrize("running", [True, False], ids=["running-writer", "new-writer"])
def test_the_next_write_refuses_to_launder(
    store: Store, attack: Callable[[Store], int], running: bool
) -> None:
    """Whether the writer was already running (its tables known) or starts after the attack,
    it refuses naming the position, stores nothing, and verify still fails."""
    writer = open_engine(store.url, catch_up=False) if running else None
    named = attack(store)
    writer = writer or open_engine(store.url, catch_up=False)
    count, head = store.count(), store.head()
    try:
        with pytest.raises(hash_chain.ChainRefused) as refused:
            writer.app.apply(parse_command(NEXT))
    finally:
        writer.close()
    assert refused.value.position == named, str(refused.value)
    assert f"position {named}" in str(refused.value)
    assert (store.count(), store.head()) == (count, head), "the refused write stored something"
    assert verify(store)[0] == 1


def test_the_cli_names_the_refused_position(store: Store) -> None:
    named = insert_after_head(store)
    result = subprocess.run([INTERLOCK, "apply", "-", "--store", store.url],
                            input=json.dumps(NEXT) + "\n", capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert f"write refused (its transaction stored nothing): position {named}: unchained" \
        in result.stderr
    assert "Traceback" not in result.stderr
    assert store.head() == named


def test_seal_is_the_operators_act(store: Store) -> None:
    """What a writer refuses, `interlock seal` vouches for when the operator says so."""
    named = insert_after_head(store)
    sealed = runner.invoke(app, ["seal", "--json", "--store", store.url])
    assert sealed.exit_code == 0, sealed.output
    assert json.loads(sealed.stdout) == {"sealed": 1, "from": named, "to": named}
    writer = open_engine(store.url, catch_up=False)
    writer.app.apply(parse_command(NEXT))
    writer.close()
    code, data = verify(store)
    assert code == 0 and data["chain"]["chained"] == store.count()


def test_seal_refuses_over_a_broken_head(store: Store) -> None:
    edit_head_event(store)
    sealed = runner.invoke(app, ["seal", "--store", store.url])
    assert sealed.exit_code == 1 and f"position {store.head()}: altered" in sealed.stderr


# ------------------------------------------- deeper edits: accepted, but never laundered


def edit_middle_event(store: Store) -> int:
    position = _position_with(store, b'"DE"')
    store.edit(position, b'"DE"', b'"US"')
    return position


def delete_middle_event_and_link(store: Store) -> int:
    position = _position_with(store, b'"DE"')
    store.sql("DELETE FROM {events} WHERE {id} = ?", position)
    store.sql("DELETE FROM {chain} WHERE position = ?", position)
    return position + 1


@pytest.mark.parametrize("attack", [edit_middle_event, delete_middle_event_and_link],
                         ids=lambda attack: attack.__name__)
def test_a_deeper_edit_is_still_named_after_later_writes(
    store: Store, attack: Callable[[Store], int]
) -> None:
    """The writer checks its head, not the whole log (that is verify's job, O(n)); what it
    lets through stays as visible to verify as before the write."""
    named = attack(store)
    writer = open_engine(store.url, catch_up=False)
    writer.app.apply(parse_command(NEXT))
    writer.app.apply(parse_command({**NEXT, "subject": "u-2"}))
    writer.close()
    code, data = verify(store)
    assert code == 1 and data["chain"]["first_problem"]["position"] == named


@pytest.mark.parametrize("column", ["state", "topic"])
def test_a_value_of_another_type_is_named_not_a_crash(tmp_path: Path, column: str) -> None:
    """SQLite keeps what a row is given: the same bytes as text, a topic as a number. verify
    names the position (the event is altered), it does not fail on the value."""
    url = f"sqlite:///{tmp_path}/store.db"
    engine = open_engine(url, catch_up=False)
    engine.app.apply_all(parsed(SETUP + employee("u-1", "DE")))
    engine.close()
    store = Store(url, "sqlite", "stored_events", "stored_events_chain")
    cast = "CAST(state AS TEXT)" if column == "state" else "42"
    store.sql(f"UPDATE {{events}} SET {column} = {cast} WHERE {{id}} = 2")
    result = runner.invoke(app, ["verify", "--json", "--no-decisions", "--store", url])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["chain"]["first_problem"]["position"] == 2


@pytest.mark.postgres
def test_a_forged_event_in_a_gap_is_named_inserted(fresh_postgres_db: str) -> None:
    """PostgreSQL positions have gaps (a rolled-back insert keeps its sequence values); an
    event forged into one sits below the head, where no writer looks, and verify names it."""
    engine = open_engine(fresh_postgres_db, catch_up=False)
    recorder = engine.app.recorder
    store = Store(fresh_postgres_db, "postgres", recorder.events_table_name,
                  recorder.chain_table_name)
    engine.app.apply_all(parsed(SETUP))
    (gap,) = store.sql("SELECT nextval(pg_get_serial_sequence('{events}', 'notification_id'))")[0]
    engine.app.apply_all(parsed(employee("u-1", "DE")))
    engine.close()
    store.sql("INSERT INTO {events} (originator_id, originator_version, topic, state, {id}) "
              "SELECT originator_id, originator_version + 1, topic, state, ? FROM {events} "
              "WHERE {id} = 1", gap)
    code, data = verify(store)
    assert code == 1
    assert data["chain"]["first_problem"]["position"] == gap
    assert data["chain"]["first_problem"]["problem"] == "inserted"


def test_a_rewritten_chain_is_caught_only_by_a_head_kept_outside(store: Store) -> None:
    """The attacker who recomputes every link passes verify alone; a head kept from an
    earlier verify (--expect-head P:LINK) does not hold any more."""
    code, before = verify(store)
    assert code == 0
    kept = f"{before['chain']['head']['position']}:{before['chain']['head']['link']}"
    edit_middle_event(store)
    store.rechain()
    assert verify(store)[0] == 0, "a consistent rewrite passes the chain alone"
    code, after = verify(store, "--expect-head", kept)
    assert code == 1 and after["head_matches"] is False
    assert "rewritten" in after["head_problem"]


# ------------------------------------------------------------- recorded time and the lock


class LockHolder:
    """A second connection holding the store's write lock, as another writer mid-transaction
    would: SQLite's BEGIN IMMEDIATE, PostgreSQL's EXCLUSIVE lock on the events table."""

    def __init__(self, store: Store) -> None:
        if store.kind == "sqlite":
            self.db: Any = sqlite3.connect(store.url.removeprefix("sqlite:///"),
                                           isolation_level=None)
            self.db.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            self.db = psycopg.connect(store.url)
            self.db.execute(f"LOCK TABLE {store.events} IN EXCLUSIVE MODE")

    def release(self) -> datetime:
        """Ends the transaction; returns the moment just before it did."""
        released = datetime.now(UTC)
        self.db.rollback() if not isinstance(self.db, sqlite3.Connection) else \
            self.db.execute("ROLLBACK")
        self.db.close()
        return released


def test_recorded_time_is_taken_under_the_write_lock(store: Store) -> None:
    """A write that waited for the lock is stamped after it got it: its recorded time is not
    before the lock was released, recorded times follow positions, and `known_at` just before
    the release does not see it."""
    engine = open_engine(store.url, catch_up=False)
    before = store.head()
    holder = LockHolder(store)
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            outcome["applied"] = engine.app.apply_all(parsed(employee("u-9", "DE")))
        except Exception as error:  # reported by the assertion below
            outcome["error"] = error

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(1.5)  # the writer is now waiting for the lock (a later start proves less)
    released = holder.release()
    writer.join(timeout=60)
    try:
        assert "error" not in outcome, outcome.get("error")
        notifications = engine.app.recorder.select_notifications(start=1, limit=100)
        stamped = [(n.id, engine.app.mapper.to_domain_event(n).timestamp)
                   for n in notifications]
        written = [moment for position, moment in stamped if position > before]
        assert len(written) == 3 and min(written) >= released, (written, released)
        assert all(a <= b for (_, a), (_, b) in pairwise(stamped)), stamped
        index = engine.follower.index
        engine.catch_up()
        assert index.facts.position_known_at(released) == before
    finally:
        engine.close()


# -------------------------------------------------------------------- concurrent writers


@pytest.fixture(params=STORES)
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store no process has opened yet: its tables do not exist."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/new.db"
    return str(request.getfixturevalue("fresh_postgres_db"))


def apply_at_once(url: str, files: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    """`interlock apply` of each file, all processes started together."""
    processes = [subprocess.Popen([INTERLOCK, "apply", str(path), "--store", url],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for path in files]
    results = []
    for process, path in zip(processes, files, strict=True):
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess([str(path)], process.returncode, out, err))
    return results


def test_concurrent_applies_on_one_new_store_wait_and_all_succeed(
    new_store: str, tmp_path: Path
) -> None:
    """Four processes, the first writes to a store whose tables do not exist yet, all on the
    same five subjects: each waits for the others' transactions, none sees IntegrityError."""
    files = []
    for writer in range(4):
        path = tmp_path / f"writer-{writer}.jsonl"
        path.write_text("".join(json.dumps({
            "type": "attest_location", "subject": f"u-{n % 5}", "country": "FR",
            "valid_from": f"2026-01-01T{writer:02d}:{n // 60:02d}:{n % 60:02d}+00:00",
            "source": "ip-geo", "command_id": f"w{writer}-{n}"}) + "\n" for n in range(60)))
        files.append(path)
    results = apply_at_once(new_store, files)
    for result in results:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["applied"] == 60
    reader = open_engine(new_store, catch_up=False)
    try:
        events = [reader.app.mapper.to_domain_event(n) for n in
                  reader.app.recorder.select_notifications(start=1, limit=1000)]
        assert len(events) == 5 + 4 * 60 * 2  # registrations, attestations, receipts
        assert sum(isinstance(e, Subject.Registered) for e in events) == 5
        assert all(a.timestamp <= b.timestamp for a, b in pairwise(events))
        assert audit.verify_chain(reader.app).ok
    finally:
        reader.close()


def test_a_refusal_after_waiting_is_reported_like_any_refusal(
    new_store: str, tmp_path: Path
) -> None:
    """Two processes register the same model at once: the second reads the first's event once
    it has the lock, and refuses the command as any duplicate registration (exit 2)."""
    files = []
    for writer in range(2):
        path = tmp_path / f"writer-{writer}.jsonl"
        path.write_text(json.dumps(SETUP[0]) + "\n")
        files.append(path)
    results = apply_at_once(new_store, files)
    assert sorted(r.returncode for r in results) == [0, 2], [r.stderr for r in results]
    refused = next(r for r in results if r.returncode == 2)
    assert "line 1: model: fable-5 is already registered" in refused.stderr
    assert "Error" not in refused.stderr


# ------------------------------------------------------------------------- checkpoints


def server_key(tmp_path: Path) -> tuple[str, str]:
    """(private key file, public key file) of a new server key."""
    key, public = tmp_path / "server.pem", tmp_path / "server.pub"
    made = runner.invoke(app, ["checkpoint", "--key", str(key), "--generate-key"])
    assert made.exit_code == 0, made.output
    public.write_text(json.loads(made.stdout)["public_key"] + "\n")
    return str(key), str(public)


def checkpoint(store: Store, key: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INTERLOCK, "checkpoint", "--key", key, "--out", str(out),
                           "--store", store.url], capture_output=True, text=True, timeout=120,
                          check=False)


def test_checkpoints_catch_a_rewrite_the_chain_cannot(store: Store, tmp_path: Path) -> None:
    """The attacker edits a fact and recomputes every link: verify's chain check passes, but
    no checkpoint signed before holds, and the next checkpoint refuses to sign."""
    key, public = server_key(tmp_path)
    anchors = tmp_path / "checkpoints.jsonl"
    assert checkpoint(store, key, anchors).returncode == 0
    writer = open_engine(store.url, catch_up=False)
    writer.app.apply(parse_command(NEXT))
    writer.close()
    assert checkpoint(store, key, anchors).returncode == 0
    assert verify(store, "--checkpoints", str(anchors), "--server-key", public)[0] == 0

    edit_middle_event(store)
    store.rechain()
    code, data = verify(store, "--checkpoints", str(anchors), "--server-key", public)
    assert data["chain"]["ok"], "a consistent rewrite passes the chain alone"
    assert code == 1
    assert [(p["line"], p["problem"]) for p in data["checkpoints"]["problems"]] == [
        (1, "rewritten"), (2, "rewritten")]
    refused = checkpoint(store, key, anchors)
    assert refused.returncode == 1 and "nothing signed" in refused.stderr
    assert len(anchors.read_text().splitlines()) == 2


def test_checkpoints_catch_a_truncated_log(store: Store, tmp_path: Path) -> None:
    """Removing the last events with their links leaves a chain that verifies and a writer
    that goes on; the checkpoint signed before names what is gone, and once new events take
    the old positions (SQLite), that they are not the ones signed."""
    key, public = server_key(tmp_path)
    anchors = tmp_path / "checkpoints.jsonl"
    assert checkpoint(store, key, anchors).returncode == 0
    head = store.head()
    store.sql("DELETE FROM {events} WHERE {id} > ?", head - 2)
    store.sql("DELETE FROM {chain} WHERE position > ?", head - 2)
    assert verify(store)[0] == 0, "truncation leaves a chain that verifies"
    code, data = verify(store, "--checkpoints", str(anchors), "--server-key", public)
    assert code == 1 and data["checkpoints"]["problems"][0]["problem"] == "removed"
    writer = open_engine(store.url, catch_up=False)
    writer.app.apply_all(parsed(employee("u-8", "DE")))
    writer.close()
    code, data = verify(store, "--checkpoints", str(anchors), "--server-key", public)
    expected = "rewritten" if store.kind == "sqlite" else "removed"
    assert code == 1 and data["checkpoints"]["problems"][0]["problem"] == expected
    assert checkpoint(store, key, anchors).returncode == 1
