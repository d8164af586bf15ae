"""The kill switch reports exactly the (subject, model) pairs whose access an event flips.

The reference is brute force: every subject and model, decided just before and just after each
event. The enforcer must agree while only looking at the pairs its indexes say an event can reach.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.application import Interlock
from domain.commands import CommandError, parse_command
from domain.decision import NO_CONTEXT, judge
from projections.access_index import AccessIndex
from projections.enforcement import ALWAYS, AccessChange, Enforcer

NOW = datetime(2026, 11, 26, 22, 30, tzinfo=UTC)
MODELS = {"m1": "a", "m2": "a", "m3": "b"}
SUBJECTS = ["s1", "s2", "s3", "s4"]
ORGS = ["o1", "o2"]
PAST, RECENT, SOON = (NOW - timedelta(days=2), NOW - timedelta(hours=1),
                      NOW + timedelta(hours=1))
TIMES = [PAST.isoformat(), RECENT.isoformat(), SOON.isoformat()]
PREDICATES = [
    {"citizenship": {"none_of": ["US"]}},
    {"citizenship": {"any_of": ["DE"]}},
    {"us_person": False},
    {"us_person": True},
    {"all": [{"employer": {"any_of": ["o1"]}}, {"not": {"location": {"any_of": ["US"]}}}]},
    {"any": [{"residency": {"any_of": ["US"]}}, {"subject": {"any_of": ["s2"]}}]},
    {"everyone": True},
    {"subject": {"none_of": ["s1"]}},
]
SELECTORS = st.lists(st.sampled_from(["m1", "m3", "family:a", "*"]), min_size=1, max_size=2)
maybe_time = st.sampled_from([None, *TIMES])

commands = st.one_of(
    st.builds(lambda e, s, m, f, u: {"type": "grant_entitlement", "entitlement": e,
                                     "grantee": s, "models": m, "valid_from": f,
                                     "valid_until": u},
              st.sampled_from(["e1", "e2", "e3", "e4"]),
              st.sampled_from([{"subject": s} for s in SUBJECTS] + [{"org": o} for o in ORGS]),
              SELECTORS, st.sampled_from(TIMES[:2]), st.sampled_from([None, TIMES[2]])),
    st.builds(lambda e, t: {"type": "revoke_entitlement", "entitlement": e, "effective_at": t},
              st.sampled_from(["e1", "e2", "e3", "e4"]), maybe_time),
    st.builds(lambda s, c, r, f, u: {"type": "attest_nationality", "subject": s,
                                     "citizenships": c, "residencies": r, "valid_from": f,
                                     "valid_until": u, "source": "kyc"},
              st.sampled_from(SUBJECTS), st.lists(st.sampled_from(["US", "DE", "FR"]),
                                                   max_size=2),
              st.lists(st.sampled_from(["US", "DE"]), max_size=1), st.sampled_from(TIMES),
              st.sampled_from([None, None, TIMES[2]])),
    st.builds(lambda s, o, f: {"type": "attest_employer", "subject": s, "org": o,
                               "valid_from": f, "source": "hr"},
              st.sampled_from(SUBJECTS), st.sampled_from(ORGS), st.sampled_from(TIMES)),
    st.builds(lambda s, c, f: {"type": "attest_location", "subject": s, "country": c,
                               "valid_from": f, "source": "ip"},
              st.sampled_from(SUBJECTS), st.sampled_from(["US", "FR"]), st.sampled_from(TIMES)),
    st.builds(lambda s, k, t: {"type": "revoke_attestation", "subject": s, "kind": k,
                               "effective_at": t},
              st.sampled_from(SUBJECTS), st.sampled_from(["nationality", "location", "employer"]),
              maybe_time),
    st.builds(lambda d, m, p, route, u, eff, exempt: {
        "type": "issue_directive", "directive": d, "models": m, "subjects": p,
        "received_at": eff, "effect": "route" if route else "deny", "route_to": route,
        "on_unknown": u, "exempt": {"subjects": exempt, "orgs": []}},
        st.sampled_from(["d1", "d2", "d3"]), SELECTORS, st.sampled_from(PREDICATES),
        st.sampled_from([None, None, "m1", "m3"]), st.sampled_from(["apply", "ignore"]),
        st.sampled_from(TIMES), st.lists(st.sampled_from(SUBJECTS), max_size=1)),
    st.builds(lambda d, p, t: {"type": "amend_directive", "directive": d, "subjects": p,
                               "effective_at": t},
              st.sampled_from(["d1", "d2", "d3"]), st.sampled_from(PREDICATES), maybe_time),
    st.builds(lambda d, m, t: {"type": "amend_directive", "directive": d, "models": m,
                               "effective_at": t},
              st.sampled_from(["d1", "d2", "d3"]), SELECTORS, maybe_time),
    st.builds(lambda d, t: {"type": "lift_directive", "directive": d, "effective_at": t},
              st.sampled_from(["d1", "d2", "d3"]), maybe_time),
    st.builds(lambda m, w, t: {"type": "withdraw_model" if w else "reinstate_model",
                               "model": m, "effective_at": t},
              st.sampled_from(list(MODELS)), st.booleans(), maybe_time),
)


PRELUDE = [
    {"type": "grant_entitlement", "entitlement": "e0", "grantee": {"org": "o1"},
     "models": ["*"], "valid_from": TIMES[0]},
    {"type": "grant_entitlement", "entitlement": "e5", "grantee": {"subject": "s3"},
     "models": ["family:a"], "valid_from": TIMES[0]},
    {"type": "attest_employer", "subject": "s1", "org": "o1", "valid_from": TIMES[0],
     "source": "hr"},
    {"type": "attest_employer", "subject": "s2", "org": "o1", "valid_from": TIMES[0],
     "source": "hr"},
    {"type": "attest_nationality", "subject": "s1", "citizenships": ["US"], "residencies": [],
     "valid_from": TIMES[0], "source": "kyc"},
    {"type": "attest_nationality", "subject": "s2", "citizenships": ["DE"], "residencies": [],
     "valid_from": TIMES[0], "source": "kyc"},
]
"""Entitled subjects with settled facts, so that most generated streams have access to flip."""


def recording_clock() -> object:
    ticks = count()
    return lambda: RECENT - timedelta(minutes=30) + timedelta(seconds=next(ticks))


def flips(facts: object, position: int) -> set[tuple[str, str, str]]:
    found = set()
    for subject in SUBJECTS:
        for model in MODELS:
            old = judge(facts, subject, model, NOW, position - 1, NO_CONTEXT)
            new = judge(facts, subject, model, NOW, position, NO_CONTEXT)
            if (old.effect == "allow") != (new.effect == "allow"):
                kind = "access_restored" if new.effect == "allow" else "access_revoked"
                found.add((subject, model, kind))
    return found


INSTANT = timedelta(microseconds=1)


def event_times(event: object) -> set[datetime]:
    """Every valid or recorded time an event names: the only places a decision can change."""
    times = {getattr(event, name, None) for name in (
        "effective_at", "valid_from", "valid_until", "received_at", "timestamp")}
    expires = (getattr(event, "terms", None) or {}).get("expires_at")
    if expires:
        times.add(datetime.fromisoformat(expires))
    return {t for t in times if t is not None}


def check_dated(change: AccessChange, facts: object, position: int, times: set[datetime]) -> None:
    """Brute force on `at` and `first`: the new decision holds from `at` (a time some fact
    names) at every time up to now and not just before it; `first` iff no earlier valid time
    had access as known before the event."""
    new = judge(facts, change.subject, change.model, NOW, position, NO_CONTEXT)
    samples = sorted({NOW - timedelta(days=3650), *times, *(t - INSTANT for t in times)})
    for t in samples:
        if change.at <= t <= NOW:
            assert judge(facts, change.subject, change.model, t, position, NO_CONTEXT) == new, t
    if change.at == ALWAYS:
        assert all(judge(facts, change.subject, change.model, t, position, NO_CONTEXT) == new
                   for t in samples if t <= NOW)
    else:
        assert change.at in times
        assert judge(facts, change.subject, change.model, change.at - INSTANT, position,
                     NO_CONTEXT) != new
    had = any(judge(facts, change.subject, change.model, t, position - 1, NO_CONTEXT).effect
              == "allow" for t in samples if t < NOW)
    assert change.first == (change.kind == "access_restored" and not had)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(st.permutations(PRELUDE), st.lists(commands, min_size=1, max_size=25)).map(
    lambda parts: [*parts[0], *parts[1]]
))
def test_enforcer_reports_exactly_the_flipped_pairs(stream: list[dict]) -> None:
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=recording_clock())
    app.apply_all(parse_command({"type": "register_model", "model": m, "family": f})
                  for m, f in MODELS.items())
    enforcer = Enforcer(AccessIndex(), clock=lambda: NOW)
    seen = 0
    times: set[datetime] = set()
    for command in stream:
        try:
            app.apply(parse_command(command))
        except CommandError:
            continue
        for notification in app.recorder.select_notifications(seen + 1, 100):
            event = app.mapper.to_domain_event(notification)
            times |= event_times(event)
            reported = enforcer.apply(event, notification.id)
            expected = flips(enforcer.index.facts, notification.id)
            assert {(c.subject, c.model, c.kind) for c in reported} == expected, command
            for change in reported:
                check_dated(change, enforcer.index.facts, notification.id, times)
            seen = notification.id


def test_a_revoked_attestation_no_longer_shields_its_subject() -> None:
    """A US citizen whose passport attestation was revoked is unknown again: an order on
    foreign nationals (fail closed) reaches them too."""
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=recording_clock())
    enforcer = Enforcer(AccessIndex(), clock=lambda: NOW)
    stream = [
        {"type": "register_model", "model": "m1", "family": "a"},
        *PRELUDE,
        {"type": "revoke_attestation", "subject": "s1", "kind": "nationality"},
        {"type": "issue_directive", "directive": "d1", "models": ["m1"],
         "subjects": {"citizenship": {"none_of": ["US"]}}, "received_at": RECENT.isoformat()},
    ]
    app.apply_all(parse_command(c) for c in stream)
    reported = []
    for notification in app.recorder.select_notifications(1, 100):
        reported = enforcer.apply(app.mapper.to_domain_event(notification), notification.id)
    assert {(c.subject, c.kind) for c in reported} == {
        ("s1", "access_revoked"), ("s2", "access_revoked"), ("s3", "access_revoked"),
    }


def test_a_directive_effective_later_is_enforced_when_its_moment_comes() -> None:
    now = [NOW]
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=recording_clock())
    enforcer = Enforcer(AccessIndex(), clock=lambda: now[0])
    setup = [
        {"type": "register_model", "model": "m1", "family": "a"},
        {"type": "grant_entitlement", "entitlement": "e1", "grantee": {"subject": "s1"},
         "models": ["*"], "valid_from": TIMES[0]},
        {"type": "issue_directive", "directive": "d1", "models": ["m1"],
         "subjects": {"everyone": True}, "received_at": RECENT.isoformat(),
         "effective_at": SOON.isoformat(), "expires_at": (SOON + timedelta(hours=1)).isoformat()},
    ]
    app.apply_all(parse_command(c) for c in setup)
    reported = []
    for notification in app.recorder.select_notifications(1, 10):
        reported += enforcer.apply(app.mapper.to_domain_event(notification), notification.id)
    assert [(c.kind, c.position) for c in reported] == [("access_restored", 2)], "the grant"
    assert reported[0].first and reported[0].at == PAST, "a first grant, valid since PAST"
    assert enforcer.next_moment == SOON

    now[0] = SOON + timedelta(minutes=1)
    revoked = enforcer.tick()
    assert [(c.kind, c.subject, c.model, c.at) for c in revoked] == [
        ("access_revoked", "s1", "m1", SOON)
    ]
    assert revoked[0].received_at == RECENT

    now[0] = SOON + timedelta(hours=2)
    restored = enforcer.tick()
    assert [(c.kind, c.subject, c.at) for c in restored] == [
        ("access_restored", "s1", SOON + timedelta(hours=1))
    ]
    assert not restored[0].first, "access given back after the order expired"
    assert restored[0].to_json()["first"] is False and "first" not in revoked[0].to_json()
    assert enforcer.tick() == []


def enforce_all(app: Interlock, enforcer: Enforcer, *commands: dict) -> list[AccessChange]:
    """Applies the commands and enforces the events they stored."""
    start = app.position + 1
    app.apply_all(parse_command(c) for c in commands)
    reported = []
    for notification in app.recorder.select_notifications(start, 100):
        reported += enforcer.apply(app.mapper.to_domain_event(notification), notification.id)
    return reported


def test_an_order_recorded_days_after_it_took_effect_is_dated_by_its_effect() -> None:
    """The issue's case: an order effective 2026-11-26T22:21Z enforced five days later says
    `at` = 22:21Z, not the moment it was enforced."""
    effective = datetime(2026, 11, 26, 22, 21, tzinfo=UTC)
    later = effective + timedelta(days=5)
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=lambda: later)
    enforcer = Enforcer(AccessIndex(), clock=lambda: later)
    grants = enforce_all(app, enforcer, {"type": "register_model", "model": "m1", "family": "a"},
                         *PRELUDE)
    assert {(c.subject, c.first, c.at) for c in grants} == {
        ("s1", True, PAST), ("s2", True, PAST), ("s3", True, PAST)}
    revoked = enforce_all(app, enforcer, {
        "type": "issue_directive", "directive": "d1", "models": ["m1"],
        "subjects": {"citizenship": {"none_of": ["US"]}}, "received_at": effective.isoformat()})
    assert {(c.kind, c.subject, c.at, c.emitted_at) for c in revoked} == {
        ("access_revoked", "s2", effective, later), ("access_revoked", "s3", effective, later)}


def test_access_given_back_is_not_a_first_grant_and_holds_from_when_the_facts_say() -> None:
    """s3 (nationality unknown) lost m1 to the order; a passport valid since 1990 arrives: access
    is restored (not first), holding as known now since s3's own grant, before the order."""
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=recording_clock())
    enforcer = Enforcer(AccessIndex(), clock=lambda: NOW)
    enforce_all(app, enforcer, {"type": "register_model", "model": "m1", "family": "a"},
                *PRELUDE, {"type": "issue_directive", "directive": "d1", "models": ["m1"],
                           "subjects": {"citizenship": {"none_of": ["US"]}},
                           "received_at": RECENT.isoformat()})
    restored = enforce_all(app, enforcer, {
        "type": "attest_nationality", "subject": "s3", "citizenships": ["US"],
        "valid_from": "1990-01-01T00:00:00+00:00", "source": "passport-kyc"})
    assert [(c.kind, c.subject, c.first, c.at) for c in restored] == [
        ("access_restored", "s3", False, PAST)]
    back = enforce_all(app, enforcer, {"type": "lift_directive", "directive": "d1",
                                       "effective_at": (NOW - timedelta(minutes=5)).isoformat()})
    assert [(c.subject, c.first, c.at) for c in back] == [
        ("s2", False, NOW - timedelta(minutes=5))]
