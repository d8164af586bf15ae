"""Checking the store's events against its hash chain, and the chain table that holds the
links (see projections/audit/__init__.py for what the chain proves)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
)
from psycopg.sql import SQL, Identifier

from projections.chain import CHAIN_SUFFIX, GENESIS, PAGE, chain_link, stored_digest


class ChainTable:
    """Reads a store's chain table; `kept` is False when the store has none."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.sqlite = isinstance(recorder, SQLiteApplicationRecorder)
        self.postgres = isinstance(recorder, PostgresApplicationRecorder)
        self.name = getattr(recorder, "events_table_name", "") + CHAIN_SUFFIX
        self.kept = bool(self.sqlite or self.postgres) and self._exists()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite:
            with self.recorder.datastore.transaction(commit=False) as c:
                c.execute(sql.format(table=self.name), tuple(params))
                return [tuple(row) for row in c.fetchall()]
        schema = self.recorder.datastore.schema
        statement = SQL(sql.replace("%", "%%").replace("?", "%s")).format(
            table=SQL("{0}.{1}").format(Identifier(schema), Identifier(self.name))
        )
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, list(params))
            return [tuple(row.values()) if isinstance(row, dict) else tuple(row)
                    for row in curs.fetchall()]

    def _exists(self) -> bool:
        if self.sqlite:
            with self.recorder.datastore.transaction(commit=False) as c:
                c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                          (self.name,))
                return c.fetchone() is not None
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute("SELECT to_regclass(%s) AS found",
                         [f'"{self.recorder.datastore.schema}"."{self.name}"'])
            row = curs.fetchone()
            return row is not None and bool(row["found"] if isinstance(row, dict) else row[0])

    def head(self) -> tuple[int, bytes]:
        """The last sealed position and its link; (0, GENESIS) for an empty or absent chain."""
        if not self.kept:
            return (0, GENESIS)
        rows = self._query("SELECT position, link FROM {table} ORDER BY position DESC LIMIT 1")
        return (rows[0][0], bytes(rows[0][1])) if rows else (0, GENESIS)

    def rows(self, after: int = 0, page: int = PAGE) -> Iterator[tuple[int, bytes, bytes]]:
        while True:
            batch = self._query(
                "SELECT position, digest, link FROM {table} WHERE position > ? "
                "ORDER BY position LIMIT ?", (after, page),
            )
            for position, digest, link in batch:
                yield position, bytes(digest), bytes(link)
            if len(batch) < page:
                return
            after = batch[-1][0]

    def link_at(self, position: int) -> bytes | None:
        """The link the chain holds at `position` (None: no row there, or no chain)."""
        if not self.kept:
            return None
        rows = self._query("SELECT link FROM {table} WHERE position = ?", (position,))
        return bytes(rows[0][0]) if rows else None

    def positions_with(self, digest: bytes) -> list[int]:
        """Where the chain holds this event digest (to tell a moved event from an edited one)."""
        return [row[0] for row in self._query(
            "SELECT position FROM {table} WHERE digest = ? ORDER BY position LIMIT 5", (digest,)
        )]


@dataclass(frozen=True)
class ChainProblem:
    position: int
    problem: str
    """`altered`, `reordered`, `removed`, `inserted` or `unchained`."""
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "problem": self.problem, "detail": self.detail}


@dataclass
class ChainReport:
    kept: bool
    events: int = 0
    chained: int = 0
    head_position: int = 0
    head_link: str = GENESIS.hex()
    problems: list[ChainProblem] = field(default_factory=list)
    more_problems: int = 0
    last_position: int = 0
    """The last stored event, and the link the chain should hold there, recomputed from the
    events (equal to the head when the chain verifies)."""
    last_link: str = GENESIS.hex()
    links: dict[int, str] = field(default_factory=dict)
    """Recomputed links at the positions `verify_chain` was asked to keep."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> ChainProblem | None:
        return min(self.problems, key=lambda p: p.position) if self.problems else None

    def add(self, problem: ChainProblem, limit: int = 20) -> None:
        if len(self.problems) < limit:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def to_json(self) -> dict[str, Any]:
        first = self.first
        return {
            "kept": self.kept, "ok": self.ok, "events": self.events, "chained": self.chained,
            "head": {"position": self.head_position, "link": self.head_link},
            "first_problem": None if first is None else first.to_json(),
            "problems": [p.to_json() for p in sorted(self.problems, key=lambda p: p.position)],
            "more_problems": self.more_problems,
        }


def _merge(
    events: Iterator[Notification], chain: Iterator[tuple[int, bytes, bytes]]
) -> Iterator[tuple[int, Notification | None, tuple[bytes, bytes] | None]]:
    """The log and the chain side by side, by position."""
    event, row = next(events, None), next(chain, None)
    while event is not None or row is not None:
        if row is None or (event is not None and event.id < row[0]):
            assert event is not None
            yield event.id, event, None
            event = next(events, None)
        elif event is None or row[0] < event.id:
            yield row[0], None, (row[1], row[2])
            row = next(chain, None)
        else:
            yield event.id, event, (row[1], row[2])
            event, row = next(events, None), next(chain, None)


def notifications(app: Application[UUID], until: int | None = None,
                  page: int = PAGE, after: int = 0) -> Iterator[Notification]:
    """Every stored event after `after` in position order, read a page at a time."""
    recorder = app.recorder
    position = after
    while True:
        batch = recorder.select_notifications(
            start=position, limit=page, stop=until, inclusive_of_start=False
        )
        yield from batch
        if len(batch) < page:
            return
        position = batch[-1].id


def verify_chain(
    app: Application[UUID],
    until: int | None = None,
    on_event: Callable[[Notification], None] | None = None,
    keep: Collection[int] = (),
    since: tuple[int, bytes] | None = None,
) -> ChainReport:
    """Checks every stored event up to `until` against the chain; `on_event` sees each
    event as it is read, so one pass over the log can also rebuild an index.

    Alongside, the chain is recomputed from the events themselves: `report.links` holds the
    recomputed link at each position in `keep` (0 included), which is what a head or checkpoint
    kept earlier is compared with, whatever the chain table now says. With `since` = (position,
    link) of a checkpoint already verified, only the events after it are walked, from its
    link; the chain must still hold that link there."""
    table = ChainTable(app.recorder)
    report = ChainReport(kept=table.kept)
    start, previous = since or (0, GENESIS)
    recomputed = previous
    if 0 in keep:
        report.links[0] = GENESIS.hex()
    if since is not None and start:
        report.head_position, report.head_link = start, previous.hex()
        report.last_position, report.last_link = start, previous.hex()
        if table.link_at(start) != previous:
            report.add(ChainProblem(start, "altered",
                                    "the chain no longer holds the link a checkpoint signed at "
                                    "this position"))
    chain_rows: Iterator[tuple[int, bytes, bytes]] = (
        (row for row in table.rows(after=start) if until is None or row[0] <= until)
        if table.kept else iter(())
    )
    unchained: list[int] = []
    for position, event, sealed in _merge(notifications(app, until, after=start), chain_rows):
        digest = None
        if event is not None:
            report.events += 1
            if on_event is not None:
                on_event(event)
            digest = stored_digest(event)
            recomputed = chain_link(recomputed, position, event.originator_id,
                                    event.originator_version, digest)
            report.last_position, report.last_link = position, recomputed.hex()
            if position in keep:
                report.links[position] = recomputed.hex()
        if sealed is None:
            if event is not None and table.kept:
                unchained.append(position)
            continue
        chained_digest, link = sealed
        report.chained += 1
        report.head_position, report.head_link = position, link.hex()
        if event is None:
            report.add(ChainProblem(position, "removed",
                                    "the event chained at this position is missing from the "
                                    "store"))
        elif digest != chained_digest:
            report.add(_mismatch(table, event))
        elif chain_link(previous, position, event.originator_id, event.originator_version,
                        digest) != link:
            report.add(ChainProblem(position, "altered",
                                    "the event's key (aggregate id or version) or its chain row "
                                    "was edited: the link does not follow"))
        previous = link
    for position in unchained:
        _unchained(report, position)
    if not table.kept and report.events and isinstance(
        app.recorder, SQLiteApplicationRecorder | PostgresApplicationRecorder
    ):
        report.add(ChainProblem(1, "unchained", "this store has no hash chain table"))
    return report


def _unchained(report: ChainReport, position: int) -> None:
    """Names an event without a link, once the walk knows where the chain's head is."""
    if position < report.head_position:
        problem, detail = "inserted", ("an event the chain does not know sits between chained "
                                       "positions")
    elif report.head_position == 0:
        problem, detail = "unchained", ("not sealed: stored before this store kept a hash "
                                        "chain, or its chain was emptied (writers refuse until "
                                        "`interlock seal`)")
    else:
        problem, detail = "unchained", ("stored after the chain's head without a link "
                                        "(writers refuse until `interlock seal`)")
    report.add(ChainProblem(position, problem, detail))


def _mismatch(table: ChainTable, event: Notification) -> ChainProblem:
    elsewhere = [p for p in table.positions_with(stored_digest(event)) if p != event.id]
    if elsewhere:
        return ChainProblem(event.id, "reordered",
                            f"holds the event chained at position {elsewhere[0]}")
    return ChainProblem(event.id, "altered",
                        "the stored bytes (topic, state or key) differ from those chained")
