"""An enforcer started from an index snapshot is the enforcer that replayed everything.

A fresh enforcer shard starts from a snapshot instead of replaying the events topic: its reach
indexes are read from the facts (`Reach.of`) and its timetable from the events, read back from
the store, whose moments are still to come (`Enforcer.resume`). On random command streams,
cut at a random position: the reach indexes and timetable must equal those of an enforcer fed
every event up to the cut, and fed the tail (then the passing of time) both must report the
same changes, every field of every one.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.application import Interlock
from domain.commands import CommandError, parse_command
from domain.subjects import Stated
from projections.access_index import AccessIndex
from projections.enforcement import ChangeGroup, Enforcer
from projections.event_pages import events_at
from projections.reach import Reach
from projections.snapshot import restore_index, write_snapshot
from tests.projections.test_classes import (
    MODELS,
    NOW,
    ORGS,
    PAST,
    SELECTORS,
    SUBJECTS,
    TIMES,
    populations,
)
from tests.unit.test_properties import SETTINGS, build, streams

LATER = TIMES[3]
"""A valid time after the enforcers' clock (NOW): facts that take effect then are timetabled."""
later_orders = st.lists(st.one_of(
    st.builds(lambda e, o, m, until: {
        "type": "grant_entitlement", "entitlement": e, "grantee": {"org": o}, "models": m,
        "valid_from": LATER if until is None else PAST[0], "valid_until": until},
        st.sampled_from(["org-1", "org-2", "org-3"]), st.sampled_from(ORGS), SELECTORS,
        st.sampled_from([None, LATER])),
    st.builds(lambda e: {"type": "revoke_entitlement", "entitlement": e, "effective_at": LATER},
              st.sampled_from(["org-1", "org-2", "org-3"])),
    st.builds(lambda m, w: {"type": "withdraw_model" if w else "reinstate_model", "model": m,
                            "effective_at": LATER},
              st.sampled_from(list(MODELS)), st.booleans()),
    st.builds(lambda d: {"type": "lift_directive", "directive": d, "effective_at": LATER},
              st.sampled_from(["d1", "d2", "d3"])),
), max_size=4)
"""Orders and organisations' grants that take effect later than the clock (the populations'
subjects have such facts of their own)."""

SLOW = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def stored(app: Interlock) -> list[tuple[Any, int]]:
    return [(app.mapper.to_domain_event(n), n.id)
            for n in app.recorder.select_notifications(1, 1_000_000)]


def indexes(reach: Reach) -> dict[str, Any]:
    """Every index `Reach` keeps, sets left empty by a later attestation dropped (they answer
    as absent ones do); its memo of entitled subjects (`_entitled_to`) is left out."""
    def kept(table: dict[str, set[str]]) -> dict[str, set[str]]:
        return {key: found for key, found in table.items() if found}

    return {
        "granted": kept(reach.granted), "granted_orgs": kept(reach.granted_orgs),
        "employees": kept(reach.employees), "settled": reach.settled,
        "settled_values": {a: kept(values) for a, values in reach.settled_values.items()},
        "settled_on": {key: statement(stated) for key, stated in reach._settled_on.items()},
        "read_kinds": reach.read_kinds, "named": reach.named,
    }


def statement(stated: Stated) -> tuple[Any, ...]:
    """What an attestation says (statements are compared by identity, and a snapshot holds
    other instances)."""
    return (stated.kind, stated.values, stated.valid_from, stated.valid_until, stated.source,
            stated.evidenced, stated.ahead)


def timetable(enforcer: Enforcer) -> list[tuple[Any, ...]]:
    return sorted((moment, position, type(cause.event), cause.event.originator_id,
                   cause.position, cause.received_at, cause.recorded_at)
                  for moment, position, cause in enforcer._timetable)


def changes(groups: list[ChangeGroup]) -> list[tuple[Any, ...]]:
    """The groups as sets of subjects with everything else they say, in no particular order
    (candidate sets read from the facts iterate in another order than fed ones)."""
    return sorted((g.kind, g.model, g.effect, g.route_to, g.disclosed, g.reasons, g.at,
                   g.position, g.received_at, g.recorded_at, g.emitted_at, g.first,
                   tuple(sorted(g.subjects))) for g in groups)


def assert_reach_read_from_facts_equals_fed(events: list[tuple[Any, int]]) -> None:
    fed = AccessIndex()
    reach = Reach.following(fed)
    fed.apply_all(events)
    assert indexes(Reach.of(fed.facts)) == indexes(reach)


@SETTINGS
@given(stream=streams())
def test_reach_read_from_the_facts_equals_reach_fed_every_event(
    stream: list[tuple[dict[str, Any], str]],
) -> None:
    assert_reach_read_from_facts_equals_fed(stored(build(stream).engine.app))


def application(stream: list[dict[str, Any]]) -> Interlock:
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.apply_all(parse_command({"type": "register_model", "model": m, "family": f})
                  for m, f in MODELS.items())
    app.apply(parse_command({"type": "grant_entitlement", "entitlement": "org-0",
                             "grantee": {"org": "o1"}, "models": ["*"], "valid_from": PAST[0]}))
    for command in stream:
        try:
            app.apply(parse_command(command))
        except CommandError:
            continue
    return app


@SLOW
@given(stream=populations(), later=later_orders, data=st.data())
def test_an_enforcer_started_from_a_snapshot_enforces_the_tail_as_a_replaying_one(
    stream: list[dict[str, Any]], later: list[dict[str, Any]], data: st.DataObject
) -> None:
    app = application([*stream, *later])
    events = stored(app)
    assert_reach_read_from_facts_equals_fed(events)
    last = events[-1][1]  # cuts near the end too: the snapshot then holds the later orders
    cut = data.draw(st.integers(0, last) | st.integers(max(0, last - len(later) - 2), last),
                    label="cut")
    half = set(SUBJECTS[::2])
    owns = data.draw(st.sampled_from([None, half.__contains__]), label="owns")
    now = [NOW]

    def clock() -> Any:
        return now[0]

    replaying = Enforcer(AccessIndex(), clock, emitting=False, owns=owns)
    for event, position in events:
        if position <= cut:
            replaying.apply(event, position, emit=False)
    taken = AccessIndex()
    taken.apply_all(e for e in events if e[1] <= cut)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "index.snapshot"
        write_snapshot(taken, app.recorder, path)
        restored = restore_index(path, app.recorder)
    assert restored is not None and restored[1].position == cut
    started = Enforcer(restored[0], clock, emitting=False, owns=owns)
    started.resume(lambda positions: events_at(app, positions))

    assert indexes(started.reach) == indexes(replaying.reach)
    assert timetable(started) == timetable(replaying)
    started.emitting = replaying.emitting = True
    for event, position in events:
        if position > cut:
            started.index.apply(event, position)
            replaying.index.apply(event, position)
            assert changes(started.take_groups()) == changes(replaying.take_groups()), position
    assert timetable(started) == timetable(replaying)
    later = [moment for moment, _, _ in replaying._timetable]
    now[0] = max(later, default=NOW) + timedelta(seconds=1)  # every moment has come
    assert changes(started.tick_groups()) == changes(replaying.tick_groups())
    assert started.next_moment is None and replaying.next_moment is None
