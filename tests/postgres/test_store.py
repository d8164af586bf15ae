"""The application on each event store: what holds on SQLite must hold on PostgreSQL.

Commands, idempotency, tracking stored with events in one transaction, and an index in another
process catching up from the store by position.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from domain.commands import CommandError, parse_command
from interlock.config import StoreURLError, store_environment
from interlock.engine import Engine, open_engine
from projections.postgres_follower import SubscriptionFollower
from projections.store_follower import StoreFollower
from tests.postgres.support import AFTER_ORDER, ORDER, SETUP, employee, parsed, wait_until


@pytest.fixture
def engines(store_url: str) -> Iterator[list[Engine]]:
    """Opened engines, closed after the test: `open` appends to it."""
    opened: list[Engine] = []
    yield opened
    for engine in opened:
        engine.close()


def open_on(engines: list[Engine], store_url: str, **options: object) -> Engine:
    engine = open_engine(store_url, **options)  # type: ignore[arg-type]
    engines.append(engine)
    return engine


def test_open_engine_follows_postgres_by_subscription_and_sqlite_by_polling(
    store_url: str, engines: list[Engine]
) -> None:
    engine = open_on(engines, store_url)
    expected = SubscriptionFollower if store_url.startswith("postgresql") else StoreFollower
    assert type(engine.follower) is expected


def test_commands_store_events_at_increasing_positions(
    store_url: str, engines: list[Engine]
) -> None:
    engine = open_on(engines, store_url)
    assert engine.app.position == 0
    first = engine.app.apply_all(parsed(SETUP))
    assert first.applied == len(SETUP)
    second = engine.app.apply_all(parsed([*employee("u-1", "US"), *employee("u-2"), ORDER]))
    assert first.position == len(SETUP)
    assert second.position == engine.app.position > first.position
    notifications = engine.app.recorder.select_notifications(start=1, limit=100)
    assert [n.id for n in notifications] == list(range(1, second.position + 1))
    engine.catch_up()
    at = parse_command({**ORDER, "received_at": AFTER_ORDER}).received_at
    assert engine.index.decide("u-1", "fable-5", at=at).effect == "allow"
    denied = engine.index.decide("u-2", "fable-5", at=at)
    assert [(r.code, r.ref) for r in denied.reasons] == [
        ("directive", "bis-2026-0417"), ("unknown_attribute", "citizenship"),
    ]


def test_a_refused_command_stores_nothing_and_keeps_those_before(
    store_url: str, engines: list[Engine]
) -> None:
    engine = open_on(engines, store_url)
    bad = {"type": "revoke_entitlement", "entitlement": "e-404"}
    with pytest.raises(CommandError, match="entitlement"):
        engine.app.apply_all(parsed([*SETUP, bad, *employee("u-1")]))
    assert engine.app.position == len(SETUP)


def test_command_ids_make_commands_idempotent_across_processes(
    store_url: str, engines: list[Engine]
) -> None:
    commands = [dict(c, command_id=f"c-{i}") for i, c in enumerate([*SETUP, *employee("u-1")])]
    first = open_on(engines, store_url, catch_up=False).app.apply_all(parsed(commands))
    assert first.applied == len(commands)
    again = open_on(engines, store_url, catch_up=False)  # another process's application
    assert again.app.apply_all(parsed(commands)).applied == 0
    assert again.app.position == first.position


def test_tracking_is_stored_with_the_events_or_not_at_all(
    store_url: str, engines: list[Engine]
) -> None:
    app = open_on(engines, store_url, catch_up=False).app
    with app.batch() as batch:
        for command in parsed(SETUP):
            batch.apply(command)
        batch.track(Tracking("kafka:interlock.commands:0", 3))
    assert app.recorder.max_tracking_id("kafka:interlock.commands:0") == 3
    position = app.position
    # An input already consumed (a redelivery) is refused with the events it would cause.
    with pytest.raises(IntegrityError), app.batch() as batch:
        batch.apply(parse_command(employee("u-1")[0]))
        batch.track(Tracking("kafka:interlock.commands:0", 3))
    assert app.position == position
    assert app.recorder.max_tracking_id("kafka:interlock.commands:0") == 3
    with app.batch() as batch:
        batch.apply(parse_command(employee("u-1")[0]))
        batch.track(Tracking("kafka:interlock.commands:0", 4))
    assert app.position > position
    assert app.recorder.max_tracking_id("kafka:interlock.commands:0") == 4


def test_an_index_elsewhere_catches_up_on_later_events_only(
    store_url: str, engines: list[Engine]
) -> None:
    writer = open_on(engines, store_url, catch_up=False)
    writer.app.apply_all(parsed([*SETUP, *employee("u-1", "US")]))
    reader = open_on(engines, store_url)
    assert reader.index.position == writer.app.position
    middle = writer.app.apply_all(parsed(employee("u-2", "DE"))).position
    last = writer.app.apply_all(parsed([ORDER, *employee("u-3", "FR")])).position
    assert reader.follower.catch_up(until=middle) == middle
    assert "u-2" in reader.index.facts.subjects and "u-3" not in reader.index.facts.subjects
    assert reader.catch_up() == last
    at = parse_command({**ORDER, "received_at": AFTER_ORDER}).received_at
    replayed = open_on(engines, store_url)
    for subject in ("u-1", "u-2", "u-3"):
        assert reader.index.decide(subject, "fable-5", at=at) == replayed.index.decide(
            subject, "fable-5", at=at
        )


def test_a_following_index_sees_another_writers_events(
    store_url: str, engines: list[Engine]
) -> None:
    reader = open_on(engines, store_url)
    reader.follower.follow(0.02)
    writer = open_on(engines, store_url, catch_up=False)
    position = writer.app.apply_all(parsed([*SETUP, *employee("u-1", "US")])).position
    wait_until(lambda: reader.index.position == position, timeout=5)
    position = writer.app.apply(parse_command(ORDER)).position
    wait_until(lambda: reader.index.position == position, timeout=5)
    assert "bis-2026-0417" in reader.index.facts.directives


def test_postgres_pool_options_come_from_the_url_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTGRES_POOL_SIZE", "3")
    monkeypatch.setenv("POSTGRES_PRE_PING", "yes")
    env = store_environment("postgresql://u:p@db:5433/interlock?pool_size=7&max_overflow=2")
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "db", "5433", "interlock")
    assert (env["POSTGRES_POOL_SIZE"], env["POSTGRES_MAX_OVERFLOW"]) == ("7", "2")
    assert env["POSTGRES_PRE_PING"] == "yes"
    with pytest.raises(StoreURLError, match="unknown option 'pool'"):
        store_environment("postgresql://u:p@db/interlock?pool=3")


@pytest.mark.postgres
def test_the_pool_is_sized_as_configured(fresh_postgres_db: str) -> None:
    engine = open_engine(f"{fresh_postgres_db}?pool_size=2&max_overflow=3", catch_up=False)
    try:
        pool = engine.app.factory.datastore.pool  # type: ignore[attr-defined]
        assert (pool.min_size, pool.max_size) == (2, 5)
    finally:
        engine.close()
