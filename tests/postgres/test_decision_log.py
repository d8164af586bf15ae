"""The decision log as a table in PostgreSQL (the event store's own database): the same entries,
filters, audit and pruning as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from interlock.decision_log import open_decision_log
from interlock.engine import Engine
from projections.decision_log import LogQuery, MemoryLog, audit, query
from projections.decision_store import TABLE, PostgresDecisionLog
from tests.decision_log_support import Replica, days_ago, world

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(fresh_postgres_db: str) -> Iterator[Engine]:
    engine = world(fresh_postgres_db)
    yield engine
    engine.close()


@pytest.fixture
def log(fresh_postgres_db: str) -> Iterator[PostgresDecisionLog]:
    log = open_decision_log(fresh_postgres_db)
    assert isinstance(log, PostgresDecisionLog)
    yield log
    log.close()


def test_entries_read_back_sealed_and_filtered_like_everywhere(
    engine: Engine, log: PostgresDecisionLog
) -> None:
    served = Replica(engine.index, log)
    entries = []
    for days, ask in enumerate([("u-de", "fable-5"), ("u-us", "fable-5"), ("u-de", "opus-4.8"),
                                ("u-anon", "fable-5")]):
        entries += served.serve(ask, served_at=days_ago(3 - days), location="DE")
    assert [e.entry_id for e in log.select(LogQuery())] == [e.entry_id for e in entries]
    assert list(log.select(LogQuery())) == entries
    for asked in (LogQuery(subject="u-de"), LogQuery(model="family:fable", effect="deny"),
                  LogQuery.model_validate({"from": days_ago(2.5), "to": days_ago(0.5)})):
        assert list(log.select(asked)) == list(MemoryLog(entries).select(asked))
    assert query(log, LogQuery(limit=3)) == (entries[:3], True)
    report = audit(log, engine.index.facts)
    assert report.ok and report.agreed == 4


def test_audit_names_an_edited_and_a_deleted_entry(engine: Engine, log: PostgresDecisionLog,
                                                   fresh_postgres_db: str) -> None:
    entries = Replica(engine.index, log).serve(*[("u-de", "fable-5")] * 4)
    with psycopg.connect(fresh_postgres_db, autocommit=True) as connection:
        connection.execute(f"UPDATE {TABLE} SET effect = 'allow' WHERE entry_id = %s",
                           (entries[3].entry_id,))
        connection.execute(f"DELETE FROM {TABLE} WHERE entry_id = %s", (entries[1].entry_id,))
    report = audit(log, engine.index.facts)
    assert [(p.problem, p.seq) for p in report.problems] == [("removed", 2), ("edited", 4)]
    assert [d.entry.entry_id for d in report.differences] == [entries[3].entry_id]


def test_pruning_on_postgres_keeps_the_chain_verifiable(engine: Engine,
                                                        log: PostgresDecisionLog) -> None:
    served = Replica(engine.index, log)
    served.serve(*[("u-us", "fable-5")] * 3, served_at=days_ago(40))
    kept = served.serve(("u-us", "fable-5"), served_at=days_ago(1))
    result = log.prune(days_ago(30), "ops:1")
    assert result.removed == 3 and result.record is not None
    assert [e.entry_id for e in log.select(LogQuery())] == [kept[0].entry_id]
    assert [p.entry_id for p in log.prunes()] == [result.record.entry_id]
    report = audit(log, engine.index.facts)
    assert report.ok and report.decisions == 1
    assert log.prune(days_ago(30), "ops:1").removed == 0
