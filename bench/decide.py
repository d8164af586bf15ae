"""Interlock against cedarpy on the demo's population and policy, plus index rebuild speed.

    .venv/bin/python bench/decide.py [--subjects N] [--events N] [--seed N] [--quick]

Prints a table of measurements against Interlock's targets. It is a benchmark, not a
test: a missed target is reported, not fatal. The one thing that fails the run (exit 1) is
Interlock and Cedar disagreeing on a decision, because then the timings compare two different
policies and mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy

from domain import decision as rule
from domain.commands import parse_command
from interlock.demo import MODELS, ORDER_COMMAND, et, synthetic_population
from interlock.engine import Engine, open_engine
from projections.access_index import AccessIndex
from projections.event_pages import PageDecoder, read_rows
from projections.snapshot import restore_index
from projections.store_follower import StoreFollower

AT = et(18, 0).astimezone(UTC)
"""Valid time of every question: after the 17:21 order, inside every cached validity span; in
UTC, the domain's canonical form (commands normalise every timestamp to UTC)."""
AT_ET = et(18, 0)
"""The same instant with its -05:00 offset, to show what a caller's offset costs."""

TARGET_MEDIAN_US = 5.0
TARGET_CEDAR_RATIO = {"warm": 25.0, "computed": 5.0}
"""Interlock's decisions per second over cedarpy's, warm (cached verdict) and computed."""
TARGET_REBUILD_EVENTS_PER_S = 300_000.0
TARGET_REPLAY_1M_S = 10.0
TARGET_BYTES_PER_SUBJECT = 400.0

Call = tuple[Any, ...]


# --------------------------------------------------------------------------------------------
# measurement


@dataclass(frozen=True)
class Timing:
    """Per-call latencies and a bulk throughput, measured on the same call sequence."""

    label: str
    samples_ns: list[int]
    bulk_per_s: float

    @property
    def median_us(self) -> float:
        return _quantile(self.samples_ns, 0.5) / 1000

    @property
    def p99_us(self) -> float:
        return _quantile(self.samples_ns, 0.99) / 1000

    def median_rate(self) -> float:
        """Single calls per second at the median latency: robust to other processes' bursts,
        which a shared 2-core machine has plenty of."""
        return 1e6 / self.median_us

    def bulk_rate(self) -> float:
        return self.bulk_per_s


def _quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))])


def timer_overhead_ns(rounds: int = 100_000) -> float:
    """The median cost of the two perf_counter_ns calls around each timed call; not subtracted,
    so every per-call figure is slightly pessimistic by this much."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    for _ in range(rounds):
        start = clock()
        samples.append(clock() - start)
    return _quantile(samples, 0.5)


BULK_REPEATS = 3
"""Bulk loops are run this many times and the best kept, as timeit does: on a shared machine
the slower runs measure the neighbours."""


def measure(label: str, function: Callable[..., Any], calls: Sequence[Call]) -> Timing:
    """Times each call on its own, then the whole sequence in one loop for throughput.

    Both loops use `function(*args)` so that every engine pays the same call overhead. The
    cyclic GC stays on: its pauses are part of what a caller sees.
    """
    clock = time.perf_counter_ns
    gc.collect()
    samples: list[int] = []
    append = samples.append
    for args in calls:
        start = clock()
        function(*args)
        append(clock() - start)
    best = float("inf")
    for _ in range(BULK_REPEATS):
        gc.collect()
        start = clock()
        for args in calls:
            function(*args)
        best = min(best, clock() - start)
    return Timing(label, samples, len(calls) / (best / 1e9))


def measure_batches(
    function: Callable[..., list[Any]], batches: Sequence[Call], size: int
) -> float:
    """Decisions per second of a batch API, over whole batches (best of BULK_REPEATS)."""
    best = float("inf")
    for _ in range(BULK_REPEATS):
        gc.collect()
        start = time.perf_counter_ns()
        for args in batches:
            function(*args)
        best = min(best, time.perf_counter_ns() - start)
    return len(batches) * size / (best / 1e9)


def rss_bytes() -> int:
    """Current resident set size (Linux /proc), for memory deltas across a phase."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------------------------
# the population, in Interlock and in Cedar


def load(store: str, commands: Iterable[dict[str, Any]]) -> tuple[Engine, float]:
    """An engine on `store` holding `commands`, caught up; and the seconds the load took."""
    engine = open_engine(store)
    start = time.perf_counter()
    engine.app.apply_all(parse_command(c) for c in commands)
    engine.catch_up()
    return engine, time.perf_counter() - start


def subject_ids(commands: Iterable[dict[str, Any]]) -> list[str]:
    """In first-seen order, so the seeded request sequence is the same on every run."""
    seen: dict[str, None] = {}
    for command in commands:
        subject = command.get("subject") or (command.get("grantee") or {}).get("subject")
        if subject:
            seen[subject] = None
    return list(seen)


def _uid(kind: str, name: str) -> dict[str, str]:
    return {"type": kind, "id": name}


def _selector_uid(selector: str) -> dict[str, str]:
    """`*`, `family:F` and exact model ids become the Catalog > Family > Model hierarchy, so
    that `resource in principal.plan` is Cedar's own way of matching a selector."""
    if selector == "*":
        return _uid("Catalog", "all")
    if selector.startswith("family:"):
        return _uid("Family", selector.removeprefix("family:"))
    return _uid("Model", selector)


@dataclass
class CedarWorld:
    """The demo population as Cedar entities, translated from the same command dicts."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    employer: dict[str, str] = field(default_factory=dict)

    def needed(self, subject: str, model: str) -> list[dict[str, Any]]:
        """Only the entities this request reads: the principal, its org, the model."""
        entities = [self.users[subject], self.models[model]]
        org = self.employer.get(subject)
        if org is not None:
            entities.append(self.orgs[org])
        return entities

    def all_entities(self) -> list[dict[str, Any]]:
        return [*self.users.values(), *self.orgs.values(), *self.models.values()]


def cedar_world(commands: Iterable[dict[str, Any]], at: datetime) -> CedarWorld:
    """Entities for every subject, org and model; refuses facts the translation can't model.

    Cedar has no valid time, so the translation is only sound when every fact holds at `at`
    for good: each is checked rather than assumed.
    """
    world = CedarWorld()
    users = world.users

    def user(subject: str) -> dict[str, Any]:
        if subject not in users:
            users[subject] = {"uid": _uid("User", subject), "attrs": {}, "parents": []}
        return users[subject]

    for command in commands:
        kind = command["type"]
        if command.get("valid_until") is not None:
            raise SystemExit(f"cedar translation: time-bounded fact not modelled: {command}")
        start = command.get("valid_from")
        if start is not None and datetime.fromisoformat(start) > at:
            raise SystemExit(f"cedar translation: fact starts after {at}: {command}")
        if kind == "register_model":
            model = command["model"]
            family = command["family"]
            world.models[model] = {
                "uid": _uid("Model", model),
                "attrs": {"family": family},
                "parents": [_uid("Family", family), _uid("Catalog", "all")],
            }
        elif kind == "grant_entitlement":
            selectors = [_selector_uid(s) for s in command["models"]]
            grantee = command["grantee"]
            if "org" in grantee:
                world.orgs[grantee["org"]] = {
                    "uid": _uid("Org", grantee["org"]),
                    "attrs": {"entitled": [{"__entity": s} for s in selectors]},
                    "parents": [],
                }
            else:
                attrs = user(grantee["subject"])["attrs"]
                attrs.setdefault("plan", []).extend({"__entity": s} for s in selectors)
        elif kind == "attest_employer":
            world.employer[command["subject"]] = command["org"]
            org = _uid("Org", command["org"])
            user(command["subject"])["attrs"]["employer"] = {"__entity": org}
        elif kind == "attest_nationality":
            user(command["subject"])["attrs"]["citizenships"] = sorted(command["citizenships"])
        elif kind == "attest_location":
            continue  # the order does not look at location
        else:
            raise SystemExit(f"cedar translation: command type not modelled: {kind}")
    for org in set(world.employer.values()) - set(world.orgs):
        world.orgs[org] = {"uid": _uid("Org", org), "attrs": {"entitled": []}, "parents": []}
    return world


CEDAR_PERMIT = """\
permit (principal is User, action == Action::"use", resource is Model)
when {
  (principal has plan && resource in principal.plan) ||
  (principal has employer && resource in principal.employer.entitled)
};
"""


def cedar_policies(order: dict[str, Any]) -> str:
    """The entitlement rule plus the order as a `forbid`; `has` makes unknown citizenship fail
    closed, as the order's `on_unknown: apply` does. Only the order's own shape is supported."""
    subjects = order["subjects"]
    test = subjects.get("citizenship", {})
    exempt = order.get("exempt") or {}
    supported = (
        set(subjects) == {"citizenship"}
        and set(test) == {"none_of"}
        and order.get("effect", "deny") == "deny"
        and order.get("on_unknown", "apply") == "apply"
        and not any(exempt.values())
        and not any(":" in m or m == "*" for m in order["models"])
    )
    if not supported:
        raise SystemExit(f"cedar translation: directive shape not modelled: {order}")
    models = ", ".join(f'Model::"{m}"' for m in order["models"])
    values = json.dumps(sorted(v.upper() for v in test["none_of"]))
    return CEDAR_PERMIT + (
        '@id("' + order["directive"] + '")\n'
        'forbid (principal is User, action == Action::"use", resource is Model)\n'
        f"when {{ resource in [{models}] }}\n"
        "unless { principal has citizenships &&\n"
        f"         principal.citizenships.containsAny({values}) }};\n"
    )


def cedar_request(subject: str, model: str) -> dict[str, Any]:
    """Dict UIDs and no context: measured faster in cedarpy than `'User::"u"'` strings or an
    empty context (which cedarpy json.dumps on every call), so Cedar gets its best form."""
    return {
        "principal": _uid("User", subject),
        "action": _uid("Action", "use"),
        "resource": _uid("Model", model),
    }


# --------------------------------------------------------------------------------------------
# report


@dataclass
class Row:
    metric: str
    interlock: str
    cedar: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peer: str = "cedarpy"
    """The heading of the column each figure's peer is in."""

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def print(self) -> None:
        headers = Row("metric", "Interlock", self.peer, "ratio", "target", "")
        table = [headers, *self.rows]
        widths = [max(len(getattr(r, f)) for r in table) for f in _COLUMNS]
        rule_line = "  ".join("-" * w for w in widths)
        print()
        print("=" * len(rule_line))
        for index, row in enumerate(table):
            cells = (getattr(row, f).ljust(w) for f, w in zip(_COLUMNS, widths, strict=True))
            print("  ".join(cells).rstrip())
            if index == 0:
                print(rule_line)
        print("=" * len(rule_line))
        for note in self.notes:
            print(f"  * {note}")


_COLUMNS = ("metric", "interlock", "cedar", "ratio", "target", "verdict")


def section(title: str) -> None:
    print(f"\n## {title}", flush=True)


def line(text: str) -> None:
    print(f"  {text}", flush=True)


def describe(timing: Timing) -> str:
    return (
        f"{timing.label:<58} median {timing.median_us:7.2f} µs  p99 {timing.p99_us:8.2f} µs  "
        f"bulk {timing.bulk_per_s:>11,.0f}/s"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _us(value: float) -> str:
    return f"{value:,.2f} µs"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


# --------------------------------------------------------------------------------------------
# the three parts


@dataclass(frozen=True)
class Settings:
    subjects: int
    events: int
    seed: int
    requests: int
    cold_requests: int
    cedar_requests: int
    batch_size: int


def bench_decisions(settings: Settings, report: Report) -> tuple[int, int]:
    """Parts 1 and 2: Interlock and Cedar on the same requests; returns (agreed, compared)."""
    section(f"population: synthetic_population({settings.subjects:,}) + the 5:21 order, memory:")
    population = synthetic_population(settings.subjects)
    commands = [*population.commands, ORDER_COMMAND]
    engine, seconds = load("memory:", commands)
    index = engine.index
    subjects = subject_ids(population.commands)
    line(f"{len(commands):,} commands -> {index.position:,} events, {len(subjects):,} subjects, "
         f"loaded and indexed in {seconds:.1f} s")
    rng = random.Random(settings.seed)
    models = list(MODELS)
    pairs = [(rng.choice(subjects), rng.choice(models)) for _ in range(settings.requests)]
    overhead = timer_overhead_ns()
    line(f"timer overhead (two perf_counter_ns calls, included in per-call figures): "
         f"{overhead:.0f} ns; `at` = {AT.isoformat()}")

    section("Interlock, in process")
    expected = {(s, m): index.decide(s, m, AT) for s in subjects for m in models}
    effects = Counter((m, d.effect) for (_, m), d in expected.items())
    line("current decisions per model (all subjects): " + ", ".join(
        f"{m} {effects[m, 'allow']:,} allow / {effects[m, 'deny']:,} deny" for m in models))
    warm = measure("(a) warm: index.decide(s, m, at)  [cached verdict lookup]",
                   index.decide, [(s, m, AT) for s, m in pairs])
    warm_now = measure("(a') warm: index.decide(s, m)  [at=None: now]",
                       index.decide, [(s, m) for s, m in pairs])
    warm_et = measure("(a\") warm, `at` with a -05:00 offset (same instant)",
                      index.decide, [(s, m, AT_ET) for s, m in pairs])
    cold_pairs = pairs[: settings.cold_requests]
    cold = measure("(b) computed: decision.decide(index.facts, s, m, at)  [full rule]",
                   rule.decide, [(index.facts, s, m, AT) for s, m in cold_pairs])
    cold_et = measure("(b\") computed, `at` with a -05:00 offset (same instant)",
                      rule.decide, [(index.facts, s, m, AT_ET) for s, m in cold_pairs])
    before = index.position - 1
    travel = measure(f"(c) time travel: index.decide(s, m, at, as_of={before})  [pre-order]",
                     index.decide, [(s, m, AT, before) for s, m in cold_pairs])
    for timing in (warm, warm_now, warm_et, cold, cold_et, travel):
        line(describe(timing))
    mismatched = sum(
        rule.decide(index.facts, s, m, AT).verdict != expected[s, m].verdict
        for s, m in cold_pairs
    )
    if mismatched:
        report.notes.append(f"ENGINE: {mismatched} cached verdicts differ from the full rule")
        line(f"!! {mismatched} cached verdicts differ from decision.decide on the same facts")

    section("cedarpy, same population and policy")
    world = cedar_world(population.commands, AT)
    policy_text = cedar_policies(ORDER_COMMAND)
    policy_set = cedarpy.PolicySet.from_str(policy_text)
    start = time.perf_counter()
    everything = cedarpy.Entities.from_json_str(json.dumps(world.all_entities()))
    parse_all = time.perf_counter() - start
    line(f"{len(everything):,} entities ({len(world.users):,} User, {len(world.orgs)} Org, "
         f"{len(world.models)} Model); parsing all into one Entities handle took "
         f"{parse_all * 1000:.0f} ms")
    cedar_pairs = pairs[: settings.cedar_requests]
    minimal = measure(
        "(m) is_authorized(req, PolicySet, [principal, org, model])",
        cedarpy.is_authorized,
        [(cedar_request(s, m), policy_set, world.needed(s, m)) for s, m in cedar_pairs],
    )
    naive = measure(
        "(t) is_authorized(req, policy text, [principal, org, model])",
        cedarpy.is_authorized,
        [(cedar_request(s, m), policy_text, world.needed(s, m))
         for s, m in cedar_pairs[: max(500, settings.cedar_requests // 5)]],
    )
    handle = measure(
        "(h) is_authorized(req, PolicySet, Entities handle of all)",
        cedarpy.is_authorized,
        [(cedar_request(s, m), policy_set, everything) for s, m in cedar_pairs],
    )
    for timing in (minimal, naive, handle):
        line(describe(timing))
    size = settings.batch_size
    chunks = [cedar_pairs[i: i + size] for i in range(0, len(cedar_pairs) - size + 1, size)]
    batch_handle = measure_batches(
        cedarpy.is_authorized_batch,
        [([cedar_request(s, m) for s, m in chunk], policy_set, everything) for chunk in chunks],
        size,
    )
    batch_minimal = measure_batches(
        cedarpy.is_authorized_batch,
        [([cedar_request(s, m) for s, m in chunk], policy_set,
          _union(world.needed(s, m) for s, m in chunk)) for chunk in chunks],
        size,
    )
    line(f"{'(B) is_authorized_batch(' + str(size) + ' reqs, PolicySet, handle of all)':<58} "
         f"bulk {batch_handle:>11,.0f}/s")
    line(f"{'(U) is_authorized_batch(' + str(size) + ' reqs, PolicySet, their entities)':<58} "
         f"bulk {batch_minimal:>11,.0f}/s")

    section("agreement: Interlock effect == allow  <=>  Cedar decision == Allow")
    agreed, compared = check_agreement(expected, world, policy_set, everything, line)

    report.add(Row("decision median, warm (a)", _us(warm.median_us), _us(minimal.median_us),
                   f"{minimal.median_us / warm.median_us:.1f}x", f"<= {TARGET_MEDIAN_US} µs",
                   verdict(warm.median_us <= TARGET_MEDIAN_US)))
    report.add(Row("decision p99, warm (a)", _us(warm.p99_us), _us(minimal.p99_us),
                   f"{minimal.p99_us / warm.p99_us:.1f}x"))
    report.add(Row("decision median, computed (b)", _us(cold.median_us),
                   _us(minimal.median_us), f"{minimal.median_us / cold.median_us:.1f}x",
                   f"<= {TARGET_MEDIAN_US} µs", verdict(cold.median_us <= TARGET_MEDIAN_US)))
    report.add(Row("decision p99, computed (b)", _us(cold.p99_us), _us(minimal.p99_us),
                   f"{minimal.p99_us / cold.p99_us:.1f}x"))
    comparisons = (("warm (a) vs (m)", warm, minimal), ("computed (b) vs (m)", cold, minimal),
                   ("warm (a) vs (h)", warm, handle), ("computed (b) vs (h)", cold, handle))
    for kind, rate in (("single-call 1/median", Timing.median_rate),
                       ("bulk loop best of 3", Timing.bulk_rate)):
        for label, mine, theirs in comparisons:
            ratio = rate(mine) / rate(theirs)
            target = TARGET_CEDAR_RATIO[label.split()[0]]
            report.add(Row(f"{kind}: {label}", _rate(rate(mine)), _rate(rate(theirs)),
                           f"{ratio:.1f}x", f">= {target:.0f}x", verdict(ratio >= target)))
    report.add(Row("bulk loop (a) vs is_authorized_batch (B)", _rate(warm.bulk_per_s),
                   _rate(batch_handle), f"{warm.bulk_per_s / batch_handle:.1f}x"))
    report.add(Row("agreement (allow vs not-allow)", f"{agreed:,}/{compared:,}", "",
                   "", "all", verdict(agreed == compared)))
    report.notes.append(
        "(a) answers from the index's materialised verdicts (every pair pre-warmed); "
        "(b) runs the whole rule on the fact base, no cache; both are honest figures. "
        "Rates: 1/median of individually timed calls, and the best of 3 uninterrupted loops "
        "(throughput, GC included; the one that suffers when other processes share the CPUs).")
    report.notes.append(
        "(m) passes cedarpy only the entities the request needs (principal, its org, the "
        "model) as a list, which cedarpy json.dumps and Cedar re-parses on every call; (h) "
        "passes one pre-parsed cedarpy.Entities handle of the whole population (cedarpy 4.x), "
        "Cedar's fastest single-call form. Cedar requests use dict UIDs and no context.")
    bench_memory_rebuild(engine, len(subjects), report)
    engine.close()
    return agreed, compared


def bench_memory_rebuild(engine: Engine, subjects: int, report: Report) -> None:
    """Part 3 on the decision population's memory: store, which is already built: a second
    store of the rebuild's size would cost more to write than the rebuild it measures."""
    section("index rebuild from the memory: store above")
    position, seconds = rebuild(engine.app)
    rate = position / seconds
    line(f"fresh AccessIndex + StoreFollower.catch_up(): {position:,} events in {seconds:.2f} s "
         f"= {rate:,.0f} events/s")
    facts, warm = traced_bytes_per_subject(engine, subjects)
    line(f"tracemalloc of that rebuild: {facts:,.0f} bytes per subject (facts), {warm:,.0f} "
         "with every (subject, model) decision cached")
    report.add(Row(f"rebuild from memory: ({position:,} events)", _rate(rate), "", "",
                   f">= {TARGET_REBUILD_EVENTS_PER_S:,.0f}/s",
                   verdict(rate >= TARGET_REBUILD_EVENTS_PER_S)))
    report.add(Row("index memory per subject (tracemalloc)", f"{warm:,.0f} B", "", "",
                   f"<= {TARGET_BYTES_PER_SUBJECT:,.0f} B",
                   verdict(warm <= TARGET_BYTES_PER_SUBJECT)))


def _union(groups: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for group in groups:
        for entity in group:
            seen.setdefault(entity["uid"]["type"] + "::" + entity["uid"]["id"], entity)
    return list(seen.values())


def check_agreement(
    expected: dict[tuple[str, str], rule.Decision],
    world: CedarWorld,
    policy_set: cedarpy.PolicySet,
    everything: cedarpy.Entities,
    say: Callable[[str], None],
) -> tuple[int, int]:
    """Every (subject, model) pair, through both Cedar entity forms that were timed."""
    pairs = list(expected)
    minimal = [
        cedarpy.is_authorized(cedar_request(s, m), policy_set, world.needed(s, m)).allowed
        for s, m in pairs
    ]
    batched = [
        result.allowed
        for result in cedarpy.is_authorized_batch(
            [cedar_request(s, m) for s, m in pairs], policy_set, everything
        )
    ]
    agreed = 0
    disagreements = []
    for pair, alone, together in zip(pairs, minimal, batched, strict=True):
        mine = expected[pair].effect == "allow"
        if mine == alone == together:
            agreed += 1
        elif len(disagreements) < 10:
            disagreements.append(f"{pair}: interlock {expected[pair].effect} "
                                 f"{[r.code for r in expected[pair].reasons]}, cedar "
                                 f"needed-entities {alone}, handle {together}")
    say(f"{agreed:,} of {len(pairs):,} (subject, model) pairs agree "
        "(checked with both the needed-entities and the whole-handle forms)")
    for text in disagreements:
        say(f"!! {text}")
    return agreed, len(pairs)


def bench_rebuild(settings: Settings, report: Report) -> None:
    """Part 3: a fresh AccessIndex caught up from a store of >= `events` events.

    The SQLite rebuilds run in child processes, so that neither the timing nor the RSS delta
    inherits the heap this process grew while writing the store.
    """
    per_subject = expected_events(synthetic_population(2_000).commands) / 2_000
    size = max(1_000, int(settings.events / per_subject * 1.01) + 1)
    population = synthetic_population(size)
    commands = [*population.commands, ORDER_COMMAND]
    subjects = len(subject_ids(population.commands))

    section(f"index rebuild from SQLite: synthetic_population({size:,}) + the order")
    with tempfile.TemporaryDirectory(prefix="interlock-bench-") as directory:
        url = f"sqlite:///{directory}/store.db"
        writer = open_engine(url, catch_up=False)
        start = time.perf_counter()
        applied = writer.app.apply_all(parse_command(c) for c in commands)
        build = time.perf_counter() - start
        writer.close()
        del writer
        megabytes = Path(directory, "store.db").stat().st_size / 1e6
        line(f"SQLite store: {applied.applied:,} commands -> {applied.position:,} events in "
             f"{build:.1f} s ({applied.applied / build:,.0f} commands/s), {megabytes:.0f} MB")
        if applied.position < settings.events:
            line(f"!! only {applied.position:,} events; asked for {settings.events:,}")
        plain = rebuild_in_child(url, "plain")
        no_gc = rebuild_in_child(url, "no-gc")
        parts = rebuild_in_child(url, "breakdown")
        mapper = rebuild_in_child(url, "breakdown-mapper")
    events = plain["position"]
    sqlite_rate = events / plain["seconds"]
    no_gc_rate = events / no_gc["seconds"]
    grown = plain["rss_grown"] / subjects
    line(f"fresh AccessIndex + StoreFollower.catch_up() from SQLite: {events:,} events in "
         f"{plain['seconds']:.2f} s = {sqlite_rate:,.0f} events/s")
    gc_share = max(0.0, 1 - no_gc["seconds"] / plain["seconds"])
    line(f"  the same with gc.disable() around catch_up(): {no_gc['seconds']:.2f} s = "
         f"{no_gc_rate:,.0f} events/s (cyclic GC takes {gc_share:.0%} of the rebuild)")
    line(f"  where the rest goes (gc off, the follower's loop split in three): "
         f"{breakdown_text(parts)}")
    line(f"  the same with eventsourcing's per-row read and mapper: {breakdown_text(mapper)}")
    line(f"  RSS grew {plain['rss_grown'] / 1e6:.0f} MB = {grown:,.0f} bytes per subject "
         "(/proc/self/statm of a fresh child, after gc; facts only, no cached decisions)")

    report.add(Row(f"rebuild from SQLite ({events:,} events)", _rate(sqlite_rate), "", "",
                   f">= {TARGET_REBUILD_EVENTS_PER_S:,.0f}/s",
                   verdict(sqlite_rate >= TARGET_REBUILD_EVENTS_PER_S)))
    report.add(Row("  same, gc.disable() during catch_up", _rate(no_gc_rate), "", "",
                   f">= {TARGET_REBUILD_EVENTS_PER_S:,.0f}/s",
                   verdict(no_gc_rate >= TARGET_REBUILD_EVENTS_PER_S)))
    projected = 1_000_000 / sqlite_rate
    report.add(Row("1M-event replay from SQLite, linear projection", f"{projected:.1f} s", "", "",
                   f"<= {TARGET_REPLAY_1M_S:.0f} s", verdict(projected <= TARGET_REPLAY_1M_S)))
    report.add(Row("index memory per subject (RSS delta)", f"{grown:,.0f} B", "", "",
                   f"<= {TARGET_BYTES_PER_SUBJECT:,.0f} B",
                   verdict(grown <= TARGET_BYTES_PER_SUBJECT)))
    report.notes.append(
        "rebuild = a fresh AccessIndex + StoreFollower(app, index).catch_up() on a store this "
        "run wrote: the decision population's memory: store, and a temp SQLite file read by a "
        "fresh child process; gc left on unless said.")
    report.notes.append(
        "memory per subject: tracemalloc counts Python allocations of an index rebuilt from the "
        "memory: store, with every current (subject, model) verdict cached; the RSS delta is a "
        "child process's growth over the SQLite rebuild (facts only, no cached verdicts).")


def rebuild(app: Any) -> tuple[int, float]:
    """A fresh index caught up from `app`'s store: (position reached, seconds)."""
    gc.collect()
    index = AccessIndex()
    start = time.perf_counter()
    position = StoreFollower(app, index).catch_up()
    return position, time.perf_counter() - start


CHILD_FLAG = "--rebuild-child"
"""Internal: `decide.py --rebuild-child URL MODE [SNAPSHOT]` is one measured rebuild, answered
as JSON. Modes: plain, no-gc, breakdown (the follower's read/decode/apply), breakdown-mapper
(the same with eventsourcing's per-row read and mapper), snapshot (restore SNAPSHOT, then
catch up the tail)."""


def rebuild_in_child(url: str, mode: str, snapshot: Path | None = None) -> dict[str, Any]:
    """Runs `--rebuild-child` in a fresh interpreter and returns what it measured."""
    command = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, url, mode,
               *([str(snapshot)] if snapshot is not None else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"rebuild child ({mode}) failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def rebuild_child(url: str, mode: str, snapshot: str | None = None) -> dict[str, Any]:
    """In the child: open the store, rebuild the index once as `mode` says, measure it."""
    engine = open_engine(url, catch_up=False)
    last = engine.app.position
    gc.collect()
    resident = rss_bytes()
    result: dict[str, Any] = {"mode": mode}
    if mode.startswith("breakdown"):
        gc.disable()
        way = "mapper" if mode == "breakdown-mapper" else "pages"
        result["read"], result["decode"], result["apply"] = catch_up_breakdown(
            engine.app, last, way)
        result["position"] = last
        gc.enable()
    elif mode == "snapshot":
        assert snapshot is not None, "snapshot mode needs a snapshot file"
        start = time.perf_counter()
        restored = restore_index(Path(snapshot), engine.app.recorder)
        result["load_seconds"] = time.perf_counter() - start
        if restored is None:
            raise SystemExit(f"{snapshot} does not fit {url}")
        index, info = restored
        result["position"] = StoreFollower(engine.app, index).catch_up()
        result["seconds"] = time.perf_counter() - start
        result["tail"] = result["position"] - info.position
    else:
        if mode == "no-gc":
            gc.disable()
        start = time.perf_counter()
        result["position"] = engine.catch_up()
        result["seconds"] = time.perf_counter() - start
        gc.enable()
        gc.collect()
        result["rss_grown"] = rss_bytes() - resident
    engine.close()
    return result


def breakdown_text(parts: dict[str, Any]) -> str:
    """One `catch_up_breakdown` child's figures, in events/s per step."""
    events = parts["position"]
    return ", ".join(f"{step} {parts[step]:.2f} s ({events / parts[step]:,.0f}/s)"
                     for step in ("read", "decode", "apply") if parts[step] > 0)


def expected_events(commands: Sequence[dict[str, Any]]) -> int:
    """One event per command, plus a `Subject.Registered` on a subject's first attestation:
    lets `--events` pick a population size without building a store to find out."""
    attested = {c["subject"] for c in commands if c["type"].startswith("attest_")}
    return len(commands) + len(attested)


def catch_up_breakdown(app: Any, last: int, way: str = "pages",
                       page_size: int = 20_000) -> tuple[float, float, float]:
    """Repeats the follower's loop into a fresh index, timing its three steps apart: read a
    page, decode it, apply it. `way` "pages" is the follower's own (`read_rows` and
    `PageDecoder`); "mapper" is eventsourcing's per-row path (`select_notifications` and
    `mapper.to_domain_event`), for comparison."""
    index = AccessIndex()
    decoder = PageDecoder(app)
    to_domain_event = app.mapper.to_domain_event
    clock = time.perf_counter
    read = decode = apply = 0.0
    while index.position < last:
        start = clock()
        if way == "pages":
            rows = read_rows(app, index.position, page_size, stop=last)
        else:
            page = app.recorder.select_notifications(
                start=index.position, limit=page_size, stop=last, inclusive_of_start=False)
        read += clock() - start
        start = clock()
        events = (decoder.decode(rows) if way == "pages"
                  else [(to_domain_event(n), n.id) for n in page])
        decode += clock() - start
        if not events:
            break
        start = clock()
        index.apply_all(events)
        apply += clock() - start
    return read, decode, apply


def traced_bytes_per_subject(source: Engine, subjects: int) -> tuple[float, float]:
    """Python-allocated bytes per subject of an index (facts; facts + warm decisions)."""
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    index = AccessIndex()
    StoreFollower(source.app, index).catch_up()
    gc.collect()
    facts = tracemalloc.get_traced_memory()[0] - baseline
    for subject in list(index.facts.subjects):
        for model in MODELS:
            index.decide(subject, model, AT)
    gc.collect()
    warm = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    del index
    return facts / subjects, warm / subjects


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, help="decision population (default 10,000)")
    parser.add_argument("--events", type=int, help="rebuild store size (default 220,000)")
    parser.add_argument("--seed", type=int, default=521, help="request sequence seed")
    parser.add_argument("--quick", action="store_true", help="small smoke run, under 30 s")
    args = parser.parse_args(argv)
    if args.quick:
        return Settings(
            subjects=args.subjects or 1_000, events=args.events or 10_000, seed=args.seed,
            requests=10_000, cold_requests=2_000, cedar_requests=2_000, batch_size=500,
        )
    return Settings(
        subjects=args.subjects or 10_000, events=args.events or 220_000, seed=args.seed,
        requests=200_000, cold_requests=50_000, cedar_requests=20_000, batch_size=1_000,
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [CHILD_FLAG]:
        print(json.dumps(rebuild_child(*arguments[1:4])))
        return 0
    settings = parse_args(arguments)
    started = time.perf_counter()
    print(f"Interlock decide benchmark: python {sys.version.split()[0]}, cedarpy "
          f"{_version('cedarpy')}, {os.cpu_count()} CPUs, seed {settings.seed}, "
          f"load average {_load()} at start")
    report = Report()
    agreed, compared = bench_decisions(settings, report)
    bench_rebuild(settings, report)
    report.add(Row("peak RSS of this run", f"{peak_rss_bytes() / 1e6:,.0f} MB"))
    report.print()
    print(f"\n  total {time.perf_counter() - started:.0f} s; load average {_load()} at the end")
    if os.getloadavg()[0] > 1.5:
        print("  (this run counts for about 1 of that load: other processes shared the CPUs, "
              "so the figures are noisier and lower than on a quiet machine)")
    if agreed != compared or compared < 2_000:
        print(f"\nFAIL: Interlock and Cedar agree on only {agreed:,} of {compared:,} decisions"
              " (need all, and at least 2,000)", file=sys.stderr)
        return 1
    return 0


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    sys.exit(main())
