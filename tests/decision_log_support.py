"""Shared by the decision log's tests: a small world (the HTTP tests' SETUP and the order),
served decisions sealed by the log's own code, and row surgery on an SQLite log."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain.commands import parse_command
from domain.decision import Context, Decision
from interlock.engine import Engine, open_engine
from projections.access_index import AccessIndex
from projections.decision_log import (
    Chain,
    DecisionIds,
    DecisionLog,
    Entry,
    Pending,
    digest_of,
    link_of,
    micros,
)
from projections.decision_store import TABLE
from tests.http.http_support import ORDER, SETUP

AFTER_ORDER = datetime(2026, 11, 26, 22, 30, tzinfo=UTC)
BEFORE_ORDER = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)


def world(store: str, order: bool = True) -> Engine:
    """A store holding SETUP (and the order), its index caught up."""
    engine = open_engine(store)
    engine.app.apply_all(parse_command(c) for c in [*SETUP, *([ORDER] if order else [])])
    engine.catch_up()
    return engine


def family_of(index: AccessIndex):  # type: ignore[no-untyped-def]
    def family(model: str) -> str | None:
        found = index.facts.models.get(model)
        return None if found is None else found.family
    return family


class Replica:
    """Serves decisions from an index into a log the way `interlock serve` does: the log's
    own ids, chain and sealing; `served_at` is set by the test."""

    def __init__(self, index: AccessIndex, log: DecisionLog, replica: str = "test:1") -> None:
        self.index = index
        self.log = log
        self.chain = Chain(replica)
        self.ids = DecisionIds()

    def pending(self, subject: str, model: str, at: datetime = AFTER_ORDER,
                as_of: int | None = None, served_at: datetime | None = None,
                location: str | None = None, known_at: datetime | None = None) -> Pending:
        context = Context(location, None) if location else Context()
        decision = self.index.decide(subject, model, at=at, as_of=as_of, known_at=known_at,
                                     context=context)
        return self.pending_of(decision, served_at, location, known_at)

    def pending_of(self, decision: Decision, served_at: datetime | None = None,
                   location: str | None = None, known_at: datetime | None = None) -> Pending:
        moment = served_at or datetime.now(UTC)
        return (self.ids.take()[0], micros(moment), decision, known_at, location, None)

    def write(self, pending: Sequence[Pending]) -> list[Entry]:
        entries = self.chain.seal(pending, family_of(self.index))
        self.log.append(entries)
        self.chain.advance(entries[-1])
        return entries

    def serve(self, *asks: tuple[str, str], **options: object) -> list[Entry]:
        return self.write([self.pending(s, m, **options) for s, m in asks])  # type: ignore[arg-type]


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def sql(path: Path, statement: str, *params: object) -> list[tuple]:
    """Runs one statement on an SQLite log file, as someone tampering with it would."""
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(statement, params).fetchall()
        connection.commit()
        return rows
    finally:
        connection.close()


def reseal(path: Path, entry: Entry, effect: str) -> None:
    """Edits an entry's effect and seals it again (digest and link), as a careful forger would
    who cannot rewrite the rest of the chain."""
    from dataclasses import replace

    assert entry.served is not None
    decision = entry.served.decision._replace(effect=effect)
    edited = replace(entry, served=replace(entry.served, decision=decision))
    digest = digest_of(edited.canonical())
    previous = sql(path, f"SELECT link FROM {TABLE} WHERE chain = ? AND seq = ?", entry.chain,
                   entry.seq - 1)
    link = link_of(bytes(previous[0][0]) if previous else bytes(32), entry.seq,
                   entry.entry_id, digest)
    sql(path, f"UPDATE {TABLE} SET effect = ?, digest = ?, link = ? WHERE entry_id = ?", effect,
        digest, link, entry.entry_id)
