"""Judging once per class of alike subjects gives exactly what judging each subject gives.

Random populations are drawn from a few fact templates, so that many subjects share a profile
(`domain.subjects`) while their positions, evidence and personal entitlement ids differ; some of
them are named by directives (exempted, or tested by `subject`), which must keep them apart.
The kill switch judging per class must report what the same kill switch judging per subject
reports (every field of every change), and interned facts must answer as per-subject ones do,
at past positions too.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.application import Interlock
from domain.commands import CommandError, parse_command
from domain.decision import NO_CONTEXT, decide, judge
from domain.facts import ATTRIBUTE_KIND, FactBase
from projections.access_index import AccessIndex
from projections.enforcement import AccessChange, Enforcer
from projections.snapshot import load_snapshot, write_snapshot

NOW = datetime(2026, 11, 26, 22, 30, tzinfo=UTC)
MODELS = {"m1": "a", "m2": "a", "m3": "b"}
SUBJECTS = [f"s{n}" for n in range(10)]
ORGS = ["o1", "o2"]
TIMES = [(NOW - timedelta(days=d)).isoformat() for d in (400, 30, 2)] + [
    (NOW + timedelta(hours=1)).isoformat()]
PAST = TIMES[:3]
ASK = [datetime.fromisoformat(t) for t in TIMES] + [NOW, NOW - timedelta(days=900)]
SELECTORS = st.lists(st.sampled_from(["m1", "m3", "family:a", "*"]), min_size=1, max_size=2,
                     unique=True)
maybe_time = st.sampled_from([None, *PAST])
PREDICATES = [
    {"citizenship": {"none_of": ["US"]}},
    {"us_person": False},
    {"all": [{"employer": {"any_of": ["o1"]}}, {"not": {"location": {"any_of": ["US"]}}}]},
    {"any": [{"residency": {"any_of": ["US"]}}, {"subject": {"any_of": ["s2", "s5"]}}]},
    {"subject": {"none_of": ["s1"]}},
    {"everyone": True},
]


@st.composite
def templates(draw: Any) -> list[dict[str, Any]]:
    """One subject's facts, with SUBJECT and GRANT standing for its name and its own ids."""
    facts: list[dict[str, Any]] = []
    if draw(st.booleans()):
        facts.append({"type": "attest_nationality", "citizenships": draw(st.lists(
            st.sampled_from(["US", "DE"]), max_size=2, unique=True)),
            "residencies": draw(st.lists(st.sampled_from(["US"]), max_size=1)),
            "valid_from": draw(st.sampled_from(TIMES)),
            "valid_until": draw(st.sampled_from([None, None, TIMES[2], TIMES[3]])),
            "source": "kyc", "evidence": "EVIDENCE"})
    if draw(st.booleans()):
        facts.append({"type": "attest_employer", "org": draw(st.sampled_from(ORGS)),
                      "valid_from": draw(st.sampled_from(PAST)), "source": "hr"})
    if draw(st.booleans()):
        facts.append({"type": "attest_location", "country": draw(st.sampled_from(["US", "FR"])),
                      "valid_from": draw(st.sampled_from(TIMES)), "source": "ip"})
    for number in range(draw(st.integers(0, 2))):
        facts.append({"type": "grant_entitlement", "entitlement": f"GRANT-{number}",
                      "models": draw(SELECTORS), "valid_from": draw(st.sampled_from(PAST)),
                      "valid_until": draw(st.sampled_from([None, TIMES[3]]))})
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            facts.append({"type": "revoke_attestation", "kind": draw(st.sampled_from(
                ["nationality", "employer", "location"])), "effective_at": draw(maybe_time)})
        else:
            facts.append({"type": "revoke_entitlement", "entitlement": "GRANT-0",
                          "effective_at": draw(maybe_time)})
    return facts


def personal(template: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    """A template's facts as `subject`'s own."""
    commands = []
    for fact in template:
        command = {**fact}
        if command["type"] == "grant_entitlement":
            command["grantee"] = {"subject": subject}
        else:
            command["subject"] = subject
        if "entitlement" in command:
            command["entitlement"] = command["entitlement"].replace("GRANT", f"plan-{subject}")
        if "evidence" in command:
            command["evidence"] = f"doc-{subject}"
        commands.append(command)
    return commands


orders = st.one_of(
    st.builds(lambda d, m, p, route, u, exempt: {
        "type": "issue_directive", "directive": d, "models": m, "subjects": p,
        "received_at": TIMES[2], "effect": "route" if route else "deny", "route_to": route,
        "on_unknown": u, "exempt": {"subjects": exempt, "orgs": []}},
        st.sampled_from(["d1", "d2", "d3"]), SELECTORS, st.sampled_from(PREDICATES),
        st.sampled_from([None, None, "m1", "m3"]), st.sampled_from(["apply", "ignore"]),
        st.lists(st.sampled_from(SUBJECTS), max_size=2)),
    st.builds(lambda d, p, t: {"type": "amend_directive", "directive": d, "subjects": p,
                               "effective_at": t},
              st.sampled_from(["d1", "d2", "d3"]), st.sampled_from(PREDICATES), maybe_time),
    st.builds(lambda d, t: {"type": "lift_directive", "directive": d, "effective_at": t},
              st.sampled_from(["d1", "d2", "d3"]), maybe_time),
    st.builds(lambda e, o, m, t: {"type": "grant_entitlement", "entitlement": e,
                                  "grantee": {"org": o}, "models": m, "valid_from": t},
              st.sampled_from(["org-1", "org-2"]), st.sampled_from(ORGS), SELECTORS,
              st.sampled_from(PAST)),
    st.builds(lambda e, t: {"type": "revoke_entitlement", "entitlement": e, "effective_at": t},
              st.sampled_from(["org-1", "org-2"]), maybe_time),
    st.builds(lambda m, w, t: {"type": "withdraw_model" if w else "reinstate_model",
                               "model": m, "effective_at": t},
              st.sampled_from(list(MODELS)), st.booleans(), maybe_time),
)


@st.composite
def populations(draw: Any) -> list[dict[str, Any]]:
    """Subjects drawn from two or three templates, their facts interleaved, then orders."""
    shapes = draw(st.lists(templates(), min_size=1, max_size=3))
    queues = [personal(shapes[draw(st.integers(0, len(shapes) - 1))], s) for s in SUBJECTS]
    facts = []
    while any(queues):
        queue = draw(st.sampled_from([q for q in queues if q]))
        facts.append(queue.pop(0))
    return facts + draw(st.lists(orders, min_size=1, max_size=8))


class PerSubject(Enforcer):
    """The same kill switch, judging every subject on its own."""

    def _classes(self, subjects: Any) -> list[list[str]]:
        return [[s] for s in subjects if self.owns is None or self.owns(s)]


class ByProfile(Enforcer):
    """The same kill switch, finding every class's members through the profiles' member sets
    (as it does for an order reaching many subjects), however few subjects an event reaches."""

    by_profile_above = 0.0


def assert_members_in_step(facts: FactBase) -> None:
    """Every subject is a member of its record's profile and of no other."""
    held = facts.profiles.held()
    assert sorted(s for profile in held for s in profile.members) == sorted(facts.records)
    for subject, record in facts.records.items():
        assert subject in record.profile.members, subject
    assert all(profile.members for profile in held)


def fields(changes: list[AccessChange]) -> list[tuple[Any, ...]]:
    return sorted((c.kind, c.subject, c.model, c.effect, c.route_to, c.disclosed, c.reasons,
                   c.at, c.position, c.first) for c in changes)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=populations(), data=st.data())
def test_class_level_changes_equal_per_subject_ones(stream: list[dict[str, Any]],
                                                    data: st.DataObject) -> None:
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.apply_all(parse_command({"type": "register_model", "model": m, "family": f})
                  for m, f in MODELS.items())
    app.apply(parse_command({"type": "grant_entitlement", "entitlement": "org-0",
                             "grantee": {"org": "o1"}, "models": ["*"], "valid_from": PAST[0]}))
    classes = Enforcer(AccessIndex(), clock=lambda: NOW)
    each = PerSubject(AccessIndex(), clock=lambda: NOW)
    members = ByProfile(AccessIndex(), clock=lambda: NOW)
    half = set(SUBJECTS[::2])
    shard = Enforcer(AccessIndex(), clock=lambda: NOW, owns=half.__contains__)
    member_shard = ByProfile(AccessIndex(), clock=lambda: NOW, owns=half.__contains__)
    events: list[tuple[Any, int]] = []
    seen = 0
    for command in stream:
        try:
            app.apply(parse_command(command))
        except CommandError:
            continue
        for notification in app.recorder.select_notifications(seen + 1, 100):
            event = app.mapper.to_domain_event(notification)
            events.append((event, notification.id))
            grouped = classes.apply(event, notification.id)
            alone = each.apply(event, notification.id)
            assert fields(grouped) == fields(alone), command
            assert fields(members.apply(event, notification.id)) == fields(alone), command
            owned = shard.apply(event, notification.id)
            assert fields(owned) == [f for f in fields(alone) if f[1] in half], command
            owned = member_shard.apply(event, notification.id)
            assert fields(owned) == [f for f in fields(alone) if f[1] in half], command
            assert_members_in_step(members.index.facts)
            seen = notification.id
    groups_of = classes.index.facts
    assert len(groups_of.profiles) <= 1 + len(events), "profiles are interned"

    facts = classes.index.facts
    assert_members_in_step(restored(classes.index, app))
    past = data.draw(st.integers(0, seen), label="as_of")
    prefix = AccessIndex()
    prefix.apply_all(e for e in events if e[1] <= past)
    for subject in SUBJECTS:
        record = facts.records.get(subject)
        view = facts.subjects.get(subject)
        for at in ASK:
            for as_of in (past, seen):
                for attribute, kind in ATTRIBUTE_KIND.items():
                    interned = None if record is None else record.attestation(kind, at, as_of)
                    one = None if view is None else view.attestation(kind, at, as_of)
                    assert (interned is None) == (one is None), (subject, kind, at, as_of)
                    if one is not None and interned is not None:
                        assert interned.values[attribute] == one.values[attribute]
                        assert (interned.valid_from, interned.valid_until) == (
                            one.valid_from, one.valid_until)
            for model in MODELS:
                assert classes.index.decide(subject, model, at=at, as_of=past) == decide(
                    prefix.facts, subject, model, at), (subject, model, at, past)
                assert judge(facts, subject, model, at, past, NO_CONTEXT) == judge(
                    prefix.facts, subject, model, at, past, NO_CONTEXT)


def restored(index: AccessIndex, app: Interlock) -> FactBase:
    """The index's fact base as a snapshot of it gives it back."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "index.snapshot"
        write_snapshot(index, app.recorder, path)
        return load_snapshot(path, app.recorder)[0]


def test_profile_members_follow_revocation_reattestation_and_grants() -> None:
    """A subject moves from profile to profile as its facts change (an attestation revoked,
    attested again, a grant given and revoked) and is a member of its current one only; an
    order then reaches it through its profile exactly as judging it alone does, also after
    its validity has run out, and after a snapshot."""
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    nationality = {"type": "attest_nationality", "citizenships": ["DE"], "residencies": [],
                   "valid_from": PAST[0], "source": "kyc"}
    commands: list[dict[str, Any]] = [
        {"type": "register_model", "model": "m1", "family": "a"},
        *({**nationality, "subject": s} for s in SUBJECTS),
        {"type": "revoke_attestation", "subject": "s1", "kind": "nationality",
         "effective_at": PAST[1]},
        {**nationality, "subject": "s1", "citizenships": ["US"], "valid_from": PAST[2],
         "valid_until": TIMES[3]},
        {"type": "grant_entitlement", "entitlement": "plan-s2", "grantee": {"subject": "s2"},
         "models": ["*"], "valid_from": PAST[0]},
        {"type": "grant_entitlement", "entitlement": "plan-s3", "grantee": {"subject": "s3"},
         "models": ["*"], "valid_from": PAST[0]},
        {"type": "revoke_entitlement", "entitlement": "plan-s3", "effective_at": PAST[2]},
        {"type": "grant_entitlement", "entitlement": "org", "grantee": {"org": "o1"},
         "models": ["*"], "valid_from": PAST[0]},
        *({"type": "attest_employer", "subject": s, "org": "o1", "valid_from": PAST[0],
           "source": "hr"} for s in SUBJECTS),
        {"type": "issue_directive", "directive": "d1", "models": ["*"],
         "subjects": {"citizenship": {"none_of": ["US"]}}, "received_at": TIMES[2],
         "effect": "deny", "route_to": None, "on_unknown": "apply",
         "exempt": {"subjects": [], "orgs": []}},
    ]
    later = [NOW, NOW + timedelta(hours=2)]  # s1's US attestation expires in between
    members = ByProfile(AccessIndex(), clock=lambda: later[0])
    each = PerSubject(AccessIndex(), clock=lambda: later[0])
    profiles_of_s1 = set()
    for command in commands:
        app.apply(parse_command(command))
    for notification in app.recorder.select_notifications(1, 1000):
        event = app.mapper.to_domain_event(notification)
        changes = members.apply(event, notification.id)
        assert fields(changes) == fields(each.apply(event, notification.id))
        assert_members_in_step(members.index.facts)
        if "s1" in members.index.facts.records:
            profiles_of_s1.add(members.index.facts.records["s1"].profile)
    facts = members.index.facts
    assert len(profiles_of_s1) >= 4, "s1 changed profile with each of its facts"
    assert all("s1" not in p.members for p in profiles_of_s1 - {facts.records["s1"].profile})
    assert facts.records["s4"].profile.members >= {"s0", "s4", "s5"}
    revoked = {change.subject for change in changes}
    assert "s4" in revoked and "s1" not in revoked, "the order denies DE citizens, not s1"
    later.pop(0)
    came = members.tick()
    assert fields(came) == fields(each.tick())
    assert {change.subject for change in came} == {"s1"}, "s1's US attestation expired"
    assert_members_in_step(restored(members.index, app))


def test_recorded_times_and_positions_survive_gaps_and_clocks_going_back() -> None:
    """The fact base keeps recorded times compactly (consecutive positions implied, one time
    per command): a store whose positions skip (PostgreSQL sequences) and a clock that steps
    back must still answer `recorded_at`, `position_known_at` and each fact's own recorded
    time exactly."""
    stamps = iter([NOW, NOW, NOW - timedelta(hours=1), NOW + timedelta(hours=1)] * 10)
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=lambda: next(stamps))
    for command in ({"type": "register_model", "model": "m1", "family": "a"},
                    {"type": "attest_nationality", "subject": "s1", "citizenships": ["DE"],
                     "residencies": [], "valid_from": PAST[0], "source": "kyc"},
                    {"type": "attest_employer", "subject": "s1", "org": "o1",
                     "valid_from": PAST[0], "source": "hr"},
                    {"type": "attest_location", "subject": "s2", "country": "US",
                     "valid_from": PAST[0], "source": "ip"}):
        app.apply(parse_command(command))
    events = [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(1, 100)]
    positions = [1, 2, 3, 7, 8, 20, 21, 22, 23, 24, 25, 26][:len(events)]
    index = AccessIndex()
    index.apply_all(zip(events, positions, strict=True))
    facts = index.facts
    clamped = []
    for event in events:
        clamped.append(max([event.timestamp, *clamped[-1:]]))
    for number, position in enumerate(positions):
        assert facts.recorded_at(position) == clamped[number]
        assert facts.recorded_as(position) == events[number].timestamp
        assert facts.position_known_at(clamped[number]) == max(
            p for p, t in zip(positions, clamped, strict=True) if t <= clamped[number])
    assert facts.recorded_at(positions[3] - 1) == clamped[2], "a position in a gap"
    assert facts.recorded_at(0) is None and facts.position_known_at(NOW - timedelta(days=9)) == 0
    for subject in ("s1", "s2"):
        for attestations in facts.subjects[subject].attestations.values():
            for attestation in attestations:
                number = positions.index(attestation.position)
                assert attestation.recorded_at == events[number].timestamp
