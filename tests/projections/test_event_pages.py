"""Events read and decoded a page at a time are the events eventsourcing's mapper makes."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.domain import DomainEvent

import domain.aggregates
from domain.application import Interlock
from interlock.config import store_environment
from projections.access_index import AccessIndex
from projections.audit.digest import state_digest
from projections.event_pages import PageDecoder, read_rows
from projections.store_follower import StoreFollower
from tests.schemas.avro_examples import build_events


def stored_event_classes() -> set[type]:
    """Every concrete event class of the aggregates (the leaves: no base like `Attested`),
    i.e. every kind of stored event."""
    found = set()
    for _, aggregate in inspect.getmembers(domain.aggregates, inspect.isclass):
        if aggregate.__module__ != domain.aggregates.__name__:
            continue
        for _, member in inspect.getmembers(aggregate, inspect.isclass):
            if (issubclass(member, DomainEvent) and member.__module__ == aggregate.__module__
                    and member.__name__ not in ("Event", "Created")):  # eventsourcing's bases
                found.add(member)
    return {cls for cls in found if not any(other is not cls and issubclass(other, cls)
                                            for other in found)}


def sqlite_app(path: Path) -> Interlock:
    return Interlock(env=store_environment(f"sqlite:///{path}"))


@pytest.fixture
def app(tmp_path: Path) -> Interlock:
    app = sqlite_app(tmp_path / "store.db")
    events = build_events()
    assert {type(event) for event in events} == stored_event_classes()
    app.events.put(events)
    return app


def mapper_events(app: Interlock) -> list[tuple[DomainEvent, int]]:
    notifications = app.recorder.select_notifications(start=1, limit=1000)
    return [(app.mapper.to_domain_event(n), n.id) for n in notifications]


def same(fast: list[tuple[DomainEvent, int]], slow: list[tuple[DomainEvent, int]]) -> None:
    assert len(fast) == len(slow)
    for (event, position), (expected, expected_position) in zip(fast, slow, strict=True):
        assert position == expected_position
        assert type(event) is type(expected)
        assert vars(event) == vars(expected)
        assert list(vars(event)) == list(vars(expected))  # the same attributes, in order
        assert type(event.originator_id) is UUID


def test_every_stored_event_type_decodes_as_the_mapper_decodes_it(app: Interlock) -> None:
    rows = read_rows(app, 0, 1000)
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    same(PageDecoder(app).decode(rows), mapper_events(app))


def test_pages_and_stops_are_by_position(app: Interlock) -> None:
    everything = mapper_events(app)
    decoder = PageDecoder(app)
    assert [p for _, p in decoder.decode(read_rows(app, 3, 2))] == [4, 5]
    assert [p for _, p in decoder.decode(read_rows(app, 3, 100, stop=6))] == [4, 5, 6]
    same(decoder.decode(read_rows(app, 3, 100)), everything[3:])


def test_notifications_pushed_by_a_subscription_decode_alike(app: Interlock) -> None:
    notifications = app.recorder.select_notifications(start=1, limit=1000)
    rows = [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
            for n in notifications]
    same(PageDecoder(app).decode(rows), mapper_events(app))


def test_a_memory_store_reads_through_select_notifications() -> None:
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.events.put(build_events())
    same(PageDecoder(app).decode(read_rows(app, 0, 1000)), mapper_events(app))


def rewrite_state(app: Interlock, path: Path, position: int, state: bytes) -> None:
    app.close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE stored_events SET state=? WHERE rowid=?", (state, position))


def test_a_state_the_fast_path_does_not_take_is_left_to_the_mapper(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    app = sqlite_app(path)
    app.events.put(build_events())
    state = read_rows(app, 0, 1)[0][4]
    rewrite_state(app, path, 1, b"  " + state + b"\n")  # blanks the mapper accepts
    app = sqlite_app(path)
    same(PageDecoder(app).decode(read_rows(app, 0, 1000)), mapper_events(app))


@pytest.mark.parametrize("state", [b'{"timestamp": ', b'{"a": 1}{"b": 2}', b"[1, 2]",
                                   b'{"x": {"_type_": "no_such", "_data_": 1}}'])
def test_a_broken_state_is_refused_in_the_mappers_words(tmp_path: Path, state: bytes) -> None:
    path = tmp_path / "store.db"
    app = sqlite_app(path)
    app.events.put(build_events())
    rewrite_state(app, path, 2, state)
    app = sqlite_app(path)
    with pytest.raises(Exception) as by_mapper:
        mapper_events(app)
    with pytest.raises(type(by_mapper.value)) as by_page:
        PageDecoder(app).decode(read_rows(app, 0, 1000))
    assert str(by_page.value) == str(by_mapper.value)


def test_the_follower_builds_the_same_index_as_the_mapper_would(app: Interlock) -> None:
    fast, slow = AccessIndex(), AccessIndex()
    StoreFollower(app, fast, page_size=3).catch_up()
    slow.apply_all(mapper_events(app))
    assert fast.position == slow.position == len(build_events())
    assert state_digest(fast.facts).digest == state_digest(slow.facts).digest
