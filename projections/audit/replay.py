"""Rebuilding an index from the log, timing it, and comparing it with the live one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
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

from domain.decision import NO_CONTEXT, judge, utc_iso
from projections.access_index import AccessIndex
from projections.audit.digest import StateDigest, _canonical, _verdict_bytes, fact_items
from projections.gc_pause import gc_paused
from projections.store_follower import Progress, StoreFollower


@dataclass(frozen=True)
class ReplayResult:
    position: int
    events: int
    seconds: float
    index: AccessIndex

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def replay(app: Application[UUID], until: int | None = None,
           progress: Progress | None = None) -> ReplayResult:
    """Rebuilds a fresh access index from the store, as `interlock replay` does, and times it."""
    index = AccessIndex()
    started = time.perf_counter()
    with gc_paused():
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
            "sections": self.sections, "decisions": self.decisions, "at": utc_iso(self.at),
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
