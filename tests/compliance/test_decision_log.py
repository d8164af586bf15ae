"""The decision log on SQLite (the embedded sink): sealed entries, `audit` re-deciding each
one from the store, the hash chain naming edits and removals, and pruning that keeps every
chain verifiable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.commands import parse_command
from domain.decision import Decision, Reason
from interlock.engine import Engine
from projections.access_index import AccessIndex
from projections.audit import notifications
from projections.decision_log import LogQuery, MemoryLog, audit, genesis_of, query
from projections.decision_store import TABLE, SQLiteDecisionLog
from tests.decision_log_support import (
    AFTER_ORDER,
    BEFORE_ORDER,
    Replica,
    days_ago,
    reseal,
    sql,
    world,
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = world(f"sqlite:///{tmp_path / 'store.db'}")
    yield engine
    engine.close()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "decisions.db"


@pytest.fixture
def log(log_path: Path) -> Iterator[SQLiteDecisionLog]:
    log = SQLiteDecisionLog(str(log_path))
    yield log
    log.close()


def order_position(engine: Engine) -> int:
    return engine.index.facts.directives["bis-2026-0417"].position


def test_honest_decisions_agree_with_the_rule(engine: Engine, log: SQLiteDecisionLog) -> None:
    served = Replica(engine.index, log)
    before = order_position(engine) - 1
    served.serve(("u-de", "fable-5"), ("u-us", "fable-5"), ("u-anon", "opus-4.8"))
    served.serve(("u-de", "fable-5"), as_of=before)          # a replica not yet at the order
    served.serve(("u-de", "opus-4.8"), location="FR", at=BEFORE_ORDER)
    served.serve(("nobody", "fable-5"), ("u-us", "no-such-model"))
    report = audit(log, engine.index.facts)
    assert report.ok, report.to_json()
    assert (report.decisions, report.agreed, len(report.heads)) == (7, 7, 1)
    assert [e.served.decision.effect for e in log.select(LogQuery(subject="u-de"))] == [
        "deny", "allow", "allow"]


def test_audit_names_an_edited_entry_and_both_answers(engine: Engine, log: SQLiteDecisionLog,
                                                      log_path: Path) -> None:
    entries = Replica(engine.index, log).serve(("u-us", "fable-5"), ("u-de", "fable-5"),
                                              ("u-us", "opus-4.8"))
    edited = entries[1]
    sql(log_path, f"UPDATE {TABLE} SET effect = 'allow' WHERE entry_id = ?", edited.entry_id)
    report = audit(log, engine.index.facts)
    assert not report.ok
    assert [(p.problem, p.entry_id) for p in report.problems] == [("edited", edited.entry_id)]
    (difference,) = report.differences
    data = difference.to_json()
    assert data["decision_id"] == edited.entry_id
    assert (data["served"]["effect"], data["rule"]["effect"]) == ("allow", "deny")
    assert data["rule"]["reasons"] == [{"code": "directive", "ref": "bis-2026-0417"}]


def test_audit_names_an_entry_edited_and_sealed_anew(engine: Engine, log: SQLiteDecisionLog,
                                                     log_path: Path) -> None:
    entries = Replica(engine.index, log).serve(("u-us", "fable-5"), ("u-de", "fable-5"),
                                              ("u-us", "opus-4.8"))
    reseal(log_path, entries[1], "allow")
    report = audit(log, engine.index.facts)
    assert [(p.problem, p.seq, p.entry_id) for p in report.problems] == [
        ("resealed", 2, entries[1].entry_id)]
    assert [d.entry.entry_id for d in report.differences] == [entries[1].entry_id]


def test_audit_names_a_deleted_entry(engine: Engine, log: SQLiteDecisionLog,
                                     log_path: Path) -> None:
    entries = Replica(engine.index, log).serve(*[("u-us", "fable-5")] * 4)
    sql(log_path, f"DELETE FROM {TABLE} WHERE entry_id = ?", entries[1].entry_id)
    sql(log_path, f"DELETE FROM {TABLE} WHERE entry_id = ?", entries[0].entry_id)
    report = audit(log, engine.index.facts)
    (problem,) = report.problems
    assert (problem.problem, problem.seq) == ("removed", 1)
    assert "seqs 1-2 missing" in problem.detail and entries[2].entry_id in problem.detail
    assert report.differences == [] and report.agreed == 2


def test_audit_finds_decisions_served_from_a_stale_replica(engine: Engine,
                                                           log: SQLiteDecisionLog) -> None:
    """A replica that lost the order's event but kept counting positions answers `allow` as
    of a position that holds the order; one that is merely behind answers as of its own
    position, which audit confirms. An entry claiming a position the store never reached
    claims facts it does not have."""
    order = order_position(engine)
    engine.app.apply(parse_command({"type": "register_model", "model": "haiku-1",
                                    "family": "haiku"}))
    engine.catch_up()
    stale = AccessIndex()
    to_event = engine.app.mapper.to_domain_event
    for notification in notifications(engine.app):
        if notification.id != order:
            stale.apply(to_event(notification), notification.id)
    assert stale.position == engine.index.position > order
    lost = Replica(stale, log, replica="replica-7:1").serve(("u-de", "fable-5"))[0]
    behind = Replica(engine.index, log).serve(("u-de", "fable-5"), as_of=order - 1)[0]
    claimed = Decision("u-us", "fable-5", "allow", None, False, (Reason("entitled", "e-acme"),),
                       AFTER_ORDER, engine.index.position + 10)
    beyond = Replica(engine.index, log).write([Replica(engine.index, log).pending_of(claimed)])[0]
    report = audit(log, engine.index.facts)
    assert report.problems == []
    differs = {d.entry.entry_id: d for d in report.differences}
    assert set(differs) == {lost.entry_id, beyond.entry_id}
    assert differs[lost.entry_id].entry.replica == "replica-7:1"
    assert (lost.served.decision.effect, differs[lost.entry_id].rule.effect) == ("allow", "deny")
    assert differs[beyond.entry_id].rule is None
    assert "beyond the store" in differs[beyond.entry_id].detail
    assert report.agreed == 1 and behind.served.decision.effect == "allow"


def test_fail_closed_answers_are_counted_not_compared(engine: Engine,
                                                     log: SQLiteDecisionLog) -> None:
    served = Replica(engine.index, log)
    stale = Decision("u-us", "fable-5", "deny", None, False, (Reason("stale_index"),),
                     AFTER_ORDER, engine.index.position)
    served.write([served.pending_of(stale)])
    report = audit(log, engine.index.facts)
    assert report.ok and (report.failed_closed, report.agreed) == (1, 0)


def test_pruning_keeps_every_chain_verifiable_and_is_recorded(engine: Engine,
                                                             log: SQLiteDecisionLog) -> None:
    first, second = Replica(engine.index, log, "a:1"), Replica(engine.index, log, "b:2")
    old = first.serve(*[("u-us", "fable-5")] * 3, served_at=days_ago(40))
    first.serve(("u-de", "fable-5"), served_at=days_ago(1))
    second.serve(("u-us", "opus-4.8"), served_at=days_ago(35))
    second.serve(("u-de", "opus-4.8"), served_at=days_ago(2))
    result = log.prune(days_ago(30), "ops:1")
    assert result.removed == 4 and result.record is not None and not result.skipped
    kept, more = query(log, LogQuery())
    assert [e.seq for e in kept] == [2, 4] and not more
    genesis = genesis_of(log.prunes())
    assert genesis[first.chain.name].seq == 3
    assert genesis[first.chain.name].link == old[-1].link
    assert genesis[second.chain.name].seq == 1
    report = audit(log, engine.index.facts)
    assert report.ok, report.to_json()
    assert report.decisions == 2 and len(report.prunes) == 1
    assert report.heads[first.chain.name][0] == 4

    assert log.prune(days_ago(30), "ops:1").record is None  # nothing older: nothing recorded
    second.serve(("u-us", "fable-5"), served_at=days_ago(31))  # a clock that went back
    behind = log.prune(days_ago(30), "ops:1")
    assert behind.removed == 0, "only a prefix is pruned: seq 3 waits for the younger seq 2"
    again = log.prune(days_ago(1.5), "ops:1")
    assert again.removed == 2
    assert {g.chain: g.seq for g in again.record.pruned.genesis} == {
        first.chain.name: 3, second.chain.name: 3}  # cumulative: the earlier genesis kept
    report = audit(log, engine.index.facts)
    assert report.ok and report.decisions == 1 and len(report.prunes) == 2


def test_a_removed_prune_record_or_pruned_prefix_is_noticed(engine: Engine,
                                                           log: SQLiteDecisionLog,
                                                           log_path: Path) -> None:
    served = Replica(engine.index, log)
    served.serve(*[("u-us", "fable-5")] * 3, served_at=days_ago(40))
    served.serve(("u-us", "fable-5"), served_at=days_ago(1))
    record = log.prune(days_ago(30), "ops:1").record
    sql(log_path, f"DELETE FROM {TABLE} WHERE entry_id = ?", record.entry_id)
    (problem,) = audit(log, engine.index.facts).problems
    assert (problem.problem, problem.seq) == ("removed", 1)


def test_pruning_leaves_a_chain_with_missing_entries_whole(engine: Engine,
                                                          log: SQLiteDecisionLog,
                                                          log_path: Path) -> None:
    served = Replica(engine.index, log)
    old = served.serve(*[("u-us", "fable-5")] * 3, served_at=days_ago(40))
    sql(log_path, f"DELETE FROM {TABLE} WHERE entry_id = ?", old[1].entry_id)
    result = log.prune(days_ago(30), "ops:1")
    assert result.removed == 0 and served.chain.name in result.skipped
    assert [p.problem for p in audit(log, engine.index.facts).problems] == ["removed"]


def test_an_audit_window_checks_its_chains_from_the_entry_before_it(
    engine: Engine, log: SQLiteDecisionLog, log_path: Path
) -> None:
    served = Replica(engine.index, log)
    served.serve(*[("u-us", "fable-5")] * 3, served_at=days_ago(10))
    inside = served.serve(*[("u-de", "fable-5")] * 3, served_at=days_ago(1))
    window = audit(log, engine.index.facts, days_ago(2), days_ago(0))
    assert window.ok and window.decisions == 3
    sql(log_path, f"DELETE FROM {TABLE} WHERE seq = 3")
    sql(log_path, f"UPDATE {TABLE} SET subject = 'u-us' WHERE entry_id = ?",
        inside[1].entry_id)
    report = audit(log, engine.index.facts, days_ago(2), days_ago(0))
    assert [(p.problem, p.seq) for p in report.problems] == [("removed", 3), ("edited", 5)]


FILTERS = [
    LogQuery(), LogQuery(subject="u-de"), LogQuery(model="fable-5"),
    LogQuery(model="family:opus"), LogQuery(model="*", effect="allow"),
    LogQuery(effect="deny", subject="u-de"), LogQuery(model="family:none"),
    LogQuery.model_validate({"from": days_ago(3), "to": days_ago(0.5)}),
    LogQuery.model_validate({"from": days_ago(1.5), "effect": "allow", "model": "fable-5"}),
]


@pytest.mark.parametrize("asked", FILTERS, ids=lambda q: q.model_dump_json(exclude_unset=True))
def test_the_sql_filters_are_the_query_models(engine: Engine, log: SQLiteDecisionLog,
                                              asked: LogQuery) -> None:
    """The table's WHERE clause and `LogQuery.matches` (what the Kafka log filters with) agree."""
    served = Replica(engine.index, log)
    entries = []
    for days, ask in enumerate([("u-de", "fable-5"), ("u-us", "fable-5"), ("u-de", "opus-4.8"),
                                ("u-anon", "fable-5"), ("u-us", "opus-4.8")]):
        entries += served.serve(ask, served_at=days_ago(days))
    memory = MemoryLog(entries)
    in_sql = [e.entry_id for e in log.select(asked)]
    assert in_sql == [e.entry_id for e in memory.select(asked)]
    assert [e.entry_id for e in log.select(asked)] == sorted(
        in_sql, key=lambda i: next(e.served_us for e in entries if e.entry_id == i))
