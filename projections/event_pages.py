"""Stored events read and decoded a page at a time, for replay and following.

eventsourcing's `select_notifications` builds a frozen `Notification` and a UUID per row, and
its mapper goes through several Python calls per event around the JSON scan. Here a page of rows
is read as plain tuples (SQLite), each state is scanned by the C JSON scanner with a lean
equivalent of `JSONTranscoder`'s object hook (the transcoder's own registered transcodings do the
decoding), topics are resolved once a page, and consecutive events of one aggregate share one
UUID. The result is the event object the mapper makes (tests/projections/test_event_pages.py
compares them over every stored event type); anything unusual (a state with blanks around it, a
broken one, a mapper with a cipher or compressor, another transcoder) goes to the mapper itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    StoredEvent,
    find_id_convertor,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import resolve_topic

Row = tuple[int, Any, int, str, bytes]
"""(position, originator id as the recorder stores it, originator version, topic, state)."""

Positioned = tuple[Any, int]
"""(eventsourcing domain event, position): what `AccessIndex.apply_all` takes."""


def read_rows(app: Application[UUID], after: int, limit: int, stop: int | None = None) -> (
    Sequence[Row]
):
    """Up to `limit` stored events after position `after` (and at most `stop`), in order."""
    recorder = app.recorder
    if isinstance(recorder, SQLiteApplicationRecorder):
        statement = (f"SELECT rowid, originator_id, originator_version, topic, state "
                     f"FROM {recorder.events_table_name} WHERE rowid>? "
                     f"{'AND rowid<=? ' if stop is not None else ''}ORDER BY rowid LIMIT ?")
        params = (after, stop, limit) if stop is not None else (after, limit)
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.row_factory = None  # plain tuples, not sqlite3.Row
            cursor.execute(statement, params)
            return cursor.fetchall()  # type: ignore[no-any-return]
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
            for n in recorder.select_notifications(start=after, limit=limit, stop=stop,
                                                   inclusive_of_start=False)]


READ_AHEAD = 256
"""Events read per query by `events_at`."""


def events_at(app: Application[UUID], positions: Sequence[int]) -> Iterator[Positioned]:
    """The stored events at `positions` (ascending), decoded as the mapper does: a few
    queries when they cluster, one per position when they lie apart (an enforcer started from
    a snapshot reads back the events whose moments are still to come)."""
    wanted = set(positions)
    decoder = PageDecoder(app)
    read_to = 0
    for position in positions:
        if position <= read_to:
            continue
        rows = read_rows(app, position - 1, READ_AHEAD)
        yield from decoder.decode([row for row in rows if row[0] in wanted])
        read_to = rows[-1][0] if rows else position


class PageDecoder:
    """Turns rows into the domain events the application's mapper would make of them."""

    def __init__(self, app: Application[UUID]) -> None:
        self._mapper: Mapper[UUID] = app.mapper
        recorder = app.recorder
        self._sqlite_id = (recorder.convert_originator_id
                           if isinstance(recorder, SQLiteApplicationRecorder) else None)
        transcoder = self._mapper.transcoder
        fast = (self._mapper.cipher is None and self._mapper.compressor is None
                and type(transcoder).decode is JSONTranscoder.decode
                and type(transcoder)._decode_obj is JSONTranscoder._decode_obj)
        self._transcodings = transcoder.names if fast else {}  # type: ignore[attr-defined]
        self._scan: Callable[[str, int], tuple[Any, int]] | None = (
            json.JSONDecoder(object_hook=self._revive).scan_once if fast else None)
        self._classes: dict[tuple[str, type], tuple[type, Callable[[Any], Any], int]] = {}

    def decode(self, rows: Sequence[Row]) -> list[Positioned]:
        """The events of `rows`, each with its position, in order."""
        scan = self._scan
        if scan is None:
            return [(self._mapper.to_domain_event(self._stored(row)), row[0]) for row in rows]
        decoded: list[Positioned] = []
        append = decoded.append
        classes = self._classes
        convert_id = self._convert_id
        last_raw: Any = None
        last_id: Any = None
        for row in rows:
            position, raw_id, version, topic, state = row
            if raw_id != last_raw:  # a subject's events mostly come together: one UUID for them
                last_raw, last_id = raw_id, convert_id(raw_id)
            try:
                cls, id_of, class_version = classes[topic, type(last_id)]
            except KeyError:
                cls, id_of, class_version = self._class(topic, type(last_id))
            try:
                text = state.decode("utf8")
                event_state, end = scan(text, 0)
                if end != len(text) or type(event_state) is not dict:
                    raise ValueError("not one JSON object")
            except Exception:  # surrounding blanks, or broken: the mapper's own way and words
                append((self._mapper.to_domain_event(self._stored(row)), position))
                continue
            event_state["originator_id"] = id_of(last_id)
            event_state["originator_version"] = version
            from_version = event_state.pop("class_version", 1)
            while from_version < class_version:
                getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
                from_version += 1
            event = object.__new__(cls)
            object.__setattr__(event, "__dict__", event_state)
            append((event, position))
        return decoded

    def _revive(self, obj: dict[str, Any]) -> Any:
        """`JSONTranscoder`'s object hook, in fewer steps: an object of exactly `_type_` and
        `_data_` is decoded by the transcoding registered under that name."""
        if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
            return self._transcodings[obj["_type_"]].decode(obj["_data_"])
        return obj

    def _class(self, topic: str, id_type: type) -> tuple[type, Callable[[Any], Any], int]:
        cls = resolve_topic(topic)
        found = (cls, find_id_convertor(cls, id_type), getattr(cls, "class_version", 1))
        self._classes[topic, id_type] = found
        return found

    def _convert_id(self, raw_id: Any) -> Any:
        """The originator id as the recorder's `select_notifications` gives it (SQLite stores
        UUIDs as text; a row read through `select_notifications` is converted already)."""
        if self._sqlite_id is not None and type(raw_id) is str:
            return self._sqlite_id(raw_id)
        return raw_id

    def _stored(self, row: Row) -> StoredEvent:
        _, raw_id, version, topic, state = row
        return StoredEvent(originator_id=self._convert_id(raw_id), originator_version=version,
                           topic=topic, state=state)
