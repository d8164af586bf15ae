"""Proof that the store and the index are what they should be: a hash chain over the event log,
a digest of every decision-relevant fact, replay and verify.

**The hash chain.** Every stored event gets a row in a side table `<events table>_chain`
(`stored_events_chain` on SQLite, `interlock_events_chain` on PostgreSQL) holding

    digest_n = sha256(u32 len(topic) || topic || state)
    link_n   = sha256(link_{n-1} || u64 position_n || u32 len(id) || originator id (16 UUID
                      bytes) || u64 originator_version || digest_n),   link_0 = 32 zero bytes

over the bytes exactly as stored, in position order: the digest covers the event (topic and
state), the link also its key (aggregate id and version) and its place in the log. Keeping the
event's own digest lets `verify_chain` tell an edited event from one moved to another position;
it walks the log and the chain side by side and names the first position whose event was
altered, removed, reordered or added without a link.

*Where links are written.* The rows are written by the application's own process recorder
(`ChainedSQLiteProcessRecorder`, `ChainedPostgresProcessRecorder` in `interlock.persistence`,
chosen by `PROCESS_RECORDER_TOPIC` in `interlock.config.store_environment`; the links are
computed by `projections.chain`), **in the same transaction as
the events**, with the same cursor: a tracking projection that lags behind the log (and is run
by whoever happens to follow the store) would leave a window in which an event could be edited
before it was sealed, and a crash there would seal the edit. Every write transaction takes the
store's write lock before it reads anything (SQLite `BEGIN IMMEDIATE`; on PostgreSQL the
`LOCK TABLE ... IN EXCLUSIVE MODE` eventsourcing takes), so reading the chain's head inside it
is race-free. The chain table is its own tracking record: its last row is the last sealed
position. Tracking records for Kafka input ride along unchanged. Memory stores keep no chain.

*A writer never chains over what it did not write.* Before it links its events, the writer
checks, under the lock, that the chain's head still verifies (the event there is the one
chained, its link follows from the one before) and that no event was stored after the head;
else it raises `ChainRefused` naming the position and the transaction stores nothing. So a row
inserted into the events table, a chain emptied, truncated or dropped, or an edited head is
never laundered by the next legitimate write. Events stored before a store kept a chain (or
by a writer without one) are sealed only by the operator's explicit `interlock seal`.

*What it proves.* Anyone who edits an event row must also rewrite its digest and every later
link; a database writer can do that, so the chain proves something once a head is kept outside
the database: `interlock verify --expect-head P:LINK` checks a head printed by an earlier
verify, and `projections.checkpoints` signs heads with a server key (`interlock checkpoint`)
that `verify --checkpoints` checks. Both compare with the links recomputed from the events
themselves, whatever the chain table says.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import zip_longest
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
)
from psycopg.sql import SQL, Identifier

from domain.decision import NO_CONTEXT, judge
from domain.facts import FactBase
from projections.access_index import AccessIndex
from projections.chain import CHAIN_SUFFIX, GENESIS, PAGE, chain_link, stored_digest
from projections.store_follower import Progress, StoreFollower


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


# ------------------------------------------------------------------------- state digests


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def fact_items(facts: FactBase) -> Iterator[tuple[str, str, Any]]:
    """(section, key, canonical data) for every decision-relevant part of a fact base."""
    for name in sorted(facts.models):
        model = facts.models[name]
        yield "models", name, [model.family, model.position,
                               [[_time(e), p, w] for e, p, w in model.changes]]
    for name in sorted(facts.entitlements):
        e = facts.entitlements[name]
        yield "entitlements", name, [
            e.grantee_kind, e.grantee, list(e.selectors), _time(e.valid_from),
            _time(e.valid_until), e.position, _time(e.recorded_at),
            [[_time(at), p] for at, p in e.revocations],
        ]
    for name in sorted(facts.subjects):
        s = facts.subjects[name]
        yield "subjects", name, [
            s.position,
            {kind: [[{k: sorted(v) for k, v in a.values.items()}, _time(a.valid_from),
                     _time(a.valid_until), a.position, _time(a.recorded_at), a.source,
                     a.evidence] for a in history]
             for kind, history in sorted(s.attestations.items())},
            {kind: [[_time(at), p] for at, p in revs]
             for kind, revs in sorted(s.revocations.items())},
            [e.entitlement for e in s.entitlements],
            [_time(t) for t in s.times],
        ]
    for name in sorted(facts.directives):
        d = facts.directives[name]
        yield "directives", name, [
            d.authority, d.reference, _time(d.received_at), _time(d.effective_at), d.position,
            _time(d.recorded_at), d.base, [[_time(at), p, terms] for at, p, terms in d.amendments],
            None if d.lift is None else [_time(d.lift[0]), d.lift[1]],
        ]
    yield "log", "position", facts.position
    yield "log", "global_times", [_time(t) for t in facts.global_times]


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass
class StateDigest:
    """A sha256 per section (models, entitlements, subjects, directives, log, decisions) over
    its items in key order; `digest` folds the sections."""

    hashers: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, key: str, text: bytes) -> None:
        hashing = self.hashers.get(section)
        if hashing is None:
            hashing = self.hashers[section] = hashlib.sha256()
        hashing.update(key.encode() + b"\0" + text + b"\n")

    @property
    def sections(self) -> dict[str, str]:
        return {name: hashing.hexdigest() for name, hashing in sorted(self.hashers.items())}

    @property
    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.sections)).hexdigest()


def state_digest(facts: FactBase) -> StateDigest:
    """A digest of everything in the fact base a decision can depend on."""
    digest = StateDigest()
    for section, key, data in fact_items(facts):
        digest.add(section, key, _canonical(data))
    return digest


def _verdict_bytes(verdict: Any) -> bytes:
    return _canonical([verdict.effect, verdict.route_to, verdict.disclosed,
                       [[r.code, r.ref] for r in verdict.reasons]])


# --------------------------------------------------------------------- replay and verify


@dataclass(frozen=True)
class ReplayResult:
    position: int
    events: int
    seconds: float
    index: AccessIndex

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def bulk_load() -> Iterator[None]:
    """Pauses the cyclic garbage collector while millions of long-lived objects are built: its
    generational passes would otherwise rescan the growing fact base again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay(app: Application[UUID], until: int | None = None,
           progress: Progress | None = None) -> ReplayResult:
    """Rebuilds a fresh access index from the store, as `interlock replay` does, and times it."""
    index = AccessIndex()
    started = time.perf_counter()
    with bulk_load():
        position = StoreFollower(app, index).catch_up(until=until, progress=progress)
    seconds = time.perf_counter() - started
    events = _events_up_to(app, position)
    return ReplayResult(position, events, seconds, index)


def _events_up_to(app: Application[UUID], position: int) -> int:
    """How many events the log holds up to `position` (positions may have gaps)."""
    recorder = app.recorder
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT COUNT(*) FROM {recorder.events_table_name} WHERE rowid <= ?",
                      (position,))
            return int(c.fetchone()[0])
    if isinstance(recorder, PostgresApplicationRecorder):
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT COUNT(*) AS n FROM {0}.{1} WHERE notification_id <= %s")
                         .format(Identifier(recorder.datastore.schema),
                                 Identifier(recorder.events_table_name)), [position])
            row = curs.fetchone()
            return int(row["n"] if isinstance(row, dict) else row[0])
    return position


def position_recorded_by(app: Application[UUID], moment: datetime) -> int:
    """The last position recorded by `moment`, by bisection over the log: recorded times do not
    decrease with position (the fact base assumes the same for `known_at`)."""
    recorder = app.recorder
    to_event = app.mapper.to_domain_event

    def first_from(position: int) -> Notification | None:
        page = recorder.select_notifications(start=position, limit=1)
        return page[0] if page else None

    low, high = 0, recorder.max_notification_id() or 0
    while low < high:
        middle = (low + high + 1) // 2
        found = first_from(middle)
        if found is None or found.id > high or to_event(found).timestamp > moment:
            high = middle - 1
        else:
            low = found.id
    return low


@dataclass
class Rebuilt:
    """A fresh index fed from one pass over the log, stopping at the first event that fails."""

    index: AccessIndex = field(default_factory=AccessIndex)
    error: tuple[int, str] | None = None
    to_event: Callable[[Notification], Any] | None = None

    def feed(self, notification: Notification) -> None:
        if self.error is not None or self.to_event is None:
            return
        try:
            self.index.apply(self.to_event(notification), notification.id)
        except Exception as error:  # a tampered event can fail anywhere
            self.error = (notification.id, f"{type(error).__name__}: {error}")


@dataclass
class IndexReport:
    ok: bool
    position: int
    live_digest: str | None
    """The live fact base's state digest (as `interlock replay` prints it)."""
    rebuilt_digest: str | None
    sections: dict[str, dict[str, str | None]]
    """Per section (models, entitlements, subjects, directives, log, decisions): both digests."""
    decisions: int
    at: datetime
    difference: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "position": self.position,
            "digest": {"live": self.live_digest, "rebuilt": self.rebuilt_digest},
            "sections": self.sections, "decisions": self.decisions, "at": _time(self.at),
            "difference": self.difference,
        }


def compare_indexes(
    live: AccessIndex | None, live_error: str | None, rebuilt: Rebuilt, at: datetime,
    decisions: bool = True,
) -> IndexReport:
    """Digests of the live and rebuilt fact bases, and of every (subject, model) decision at
    `at` (the live one through the index's cached `decide`), compared item by item in one pass
    so that the first difference can be named."""
    if live is None or rebuilt.error is not None:
        reasons = []
        if rebuilt.error is not None:
            reasons.append(f"the event at position {rebuilt.error[0]} cannot be applied: "
                           f"{rebuilt.error[1]}")
        if live is None:
            reasons.append(f"the live index could not be built: {live_error}")
        return IndexReport(False, rebuilt.index.position, None, None, {}, 0, at,
                           "; ".join(reasons))
    facts, fresh = live.facts, rebuilt.index.facts
    mine, theirs = StateDigest(), StateDigest()
    difference = None
    if live.position != fresh.position:
        difference = (f"the live index is at position {live.position}, the rebuild at "
                      f"{fresh.position}")
    missing = ("", "", None)
    for ours, other in zip_longest(fact_items(facts), fact_items(fresh), fillvalue=missing):
        ours_text, other_text = _canonical(ours[2]), _canonical(other[2])
        mine.add(ours[0], ours[1], ours_text)
        theirs.add(other[0], other[1], other_text)
        if difference is None and (ours[:2] != other[:2] or ours_text != other_text):
            section, key = ours[:2] if ours[0] else other[:2]
            difference = (f"{section}: {key}: live {ours_text.decode()[:300]} / rebuilt "
                          f"{other_text.decode()[:300]}")
    facts_digests = (mine.digest, theirs.digest)
    count = 0
    if decisions:
        models = sorted(set(facts.models) | set(fresh.models))
        for subject in sorted(set(facts.subjects) | set(fresh.subjects)):
            for model in models:
                key = f"{subject} {model}"
                ours_text = _verdict_bytes(live.decide(subject, model, at=at).verdict)
                other_text = _verdict_bytes(
                    judge(fresh, subject, model, at, fresh.position, NO_CONTEXT))
                mine.add("decisions", key, ours_text)
                theirs.add("decisions", key, other_text)
                count += 1
                if difference is None and ours_text != other_text:
                    difference = (f"decisions: {key}: live {ours_text.decode()} / rebuilt "
                                  f"{other_text.decode()}")
    live_sections, rebuilt_sections = mine.sections, theirs.sections
    sections: dict[str, dict[str, str | None]] = {
        name: {"live": live_sections.get(name), "rebuilt": rebuilt_sections.get(name)}
        for name in sorted(set(live_sections) | set(rebuilt_sections))
    }
    return IndexReport(difference is None, fresh.position, *facts_digests, sections, count, at,
                       difference)
