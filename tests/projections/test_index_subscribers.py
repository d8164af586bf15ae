"""The one follower: whatever reacts to applied events subscribes to the access index, and an
embedded kill switch publishes through the follower without the follower knowing of it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from domain.application import Interlock
from domain.commands import parse_command
from projections.access_index import AccessIndex, Applied
from projections.enforcement import ChangeGroup, Enforcer
from projections.store_follower import StoreFollower

NOW = datetime(2026, 11, 26, 22, 30, tzinfo=UTC)
SETUP = [
    {"type": "register_model", "model": "m1", "family": "a"},
    {"type": "attest_nationality", "subject": "s1", "citizenships": ["DE"], "residencies": [],
     "valid_from": "2020-01-01T00:00:00Z", "source": "hr"},
    {"type": "grant_entitlement", "entitlement": "e1", "grantee": {"subject": "s1"},
     "models": ["m1"], "valid_from": "2020-01-01T00:00:00Z"},
]
ORDER = {"type": "issue_directive", "directive": "d1", "models": ["m1"],
         "subjects": {"citizenship": {"none_of": ["US"]}},
         "received_at": (NOW - timedelta(hours=1)).isoformat()}


def store(*commands: dict) -> Interlock:
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.apply_all(parse_command(c) for c in commands)
    return app


def test_subscribers_see_every_applied_event_in_order_and_each_batch_settle() -> None:
    app = store(*SETUP)
    index = AccessIndex()
    seen: list[int] = []
    calls: list[str] = []

    def applied(change: Applied) -> None:
        seen.append(change.position)
        calls.append("applied")

    index.subscribe(applied, lambda: calls.append("ticked"), lambda: calls.append("settled"))
    StoreFollower(app, index, page_size=2).catch_up()
    assert seen == list(range(1, app.position + 1))
    pages = [seen[i:i + 2] for i in range(0, len(seen), 2)]
    assert calls == [c for page in pages for c in ["applied"] * len(page) + ["settled"]], \
        "settled once per page, after its events"
    index.tick()
    assert calls[-2:] == ["ticked", "settled"]


def test_a_subscriber_reads_the_decision_held_before_the_event_and_leaves_its_own() -> None:
    app = store(*SETUP)
    index = AccessIndex()
    StoreFollower(app, index).catch_up()
    held = index.decide("s1", "m1", at=NOW).verdict
    assert held.effect == "allow"
    before: list[object] = []
    index.subscribe(lambda change: before.append(change.previous("s1", "m1", NOW)))
    app.apply(parse_command(ORDER))
    StoreFollower(app, index).catch_up()
    assert before == [held], "the current decision, before the index forgets it"
    assert index.decide("s1", "m1", at=NOW).effect == "deny"


def test_the_follower_publishes_an_embedded_enforcers_changes_but_not_history() -> None:
    app = store(*SETUP, ORDER)
    index = AccessIndex()
    published: list[list[ChangeGroup]] = []
    enforcer = Enforcer(index, clock=lambda: NOW, publish=published.append, emitting=False)
    follower = StoreFollower(app, index)
    follower.catch_up()
    assert published == [] and enforcer.reach.granted, "history: reach kept, nothing emitted"
    enforcer.emitting = True
    app.apply(parse_command({"type": "lift_directive", "directive": "d1",
                             "effective_at": (NOW - timedelta(minutes=30)).isoformat()}))
    follower.catch_up()
    pairs = [[(c.kind, c.subject, c.model) for g in batch for c in g.changes()]
             for batch in published]
    assert pairs == [
        [("access_restored", "s1", "m1")]]


def test_a_decision_asked_during_the_fan_out_already_answers_from_the_order() -> None:
    """An order is visible to `decide` as soon as the index has it: the kill switch's fan-out
    (here held up in the enforcer's publish, and in a subscriber) makes no decision wait for
    it, nor answer from the facts before the order."""
    app = store(*SETUP)
    index = AccessIndex()
    StoreFollower(app, index).catch_up()
    assert index.decide("s1", "m1", at=NOW).effect == "allow", "cached before the order"
    in_fan_out, release = threading.Event(), threading.Event()

    def held_up(change: Applied) -> None:
        if change.concerns is None:  # the order
            in_fan_out.set()
            release.wait(60)

    def publish(groups: list[ChangeGroup]) -> None:
        in_fan_out.set()
        release.wait(60)

    Enforcer(index, clock=lambda: NOW, publish=publish)
    index.subscribe(held_up)
    app.apply(parse_command(ORDER))
    follower = threading.Thread(target=StoreFollower(app, index).catch_up)
    follower.start()
    try:
        assert in_fan_out.wait(30), "the fan-out started"
        answers: list[tuple[str, bool]] = []
        asking = threading.Thread(target=lambda: answers.append(
            (index.decide("s1", "m1", at=NOW).effect, release.is_set())))
        asking.start()
        asking.join(10)
        assert answers == [("deny", False)], "answered from the order, during the fan-out"
    finally:
        release.set()
        follower.join(30)


def test_the_kill_switch_says_how_far_it_has_got_while_decisions_already_see_the_order() -> None:
    """`enforced_position` trails the index while an order fans out: at publish time decisions
    already answer from the order, the position is still the one before it; after, it is the
    order's."""
    app = store(*SETUP)
    index = AccessIndex()
    seen: list[tuple[int, int, str]] = []

    def publish(groups: list[ChangeGroup]) -> None:
        seen.append((index.position, enforcer.enforced_position,
                     index.decide("s1", "m1", at=NOW).effect))

    enforcer = Enforcer(index, clock=lambda: NOW, publish=publish, emitting=False)
    follower = StoreFollower(app, index)
    follower.catch_up()
    assert enforcer.enforced_position == app.position
    enforcer.emitting = True
    app.apply(parse_command(ORDER))
    follower.catch_up()
    assert seen == [(app.position, app.position - 1, "deny")]
    assert enforcer.enforced_position == app.position
