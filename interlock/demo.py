"""The embedded demo: the 5:21 p.m. order on a deterministic synthetic population.

Everything goes through the same code paths as the CLI: commands are applied by the
application to the SQLite store, decisions come from the access index that follows it. Only the
clock is simulated, so that "recorded at 17:21 ET" is true of the stored events.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from domain.commands import parse_command
from interlock.engine import Engine, open_engine

ET = timezone(timedelta(hours=-5), "ET")
DAY = datetime(2026, 11, 26, tzinfo=ET)
ORDER = "bis-2026-0417"
MODELS = {"fable-5": "fable", "mythos-5": "mythos", "opus-4.8": "opus"}
ORGS = {
    "interlock-ai": ["*"],
    "acme": ["family:fable", "opus-4.8"],
    "globex": ["*"],
    "initech": ["mythos-5", "opus-4.8"],
}
FOREIGN = ["DE", "FR", "IN", "CN", "BR", "JP", "GB", "CA", "KR", "MX"]


def et(hour: int, minute: int, second: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute, second=second)


class DemoClock:
    """Recorded time for the demo: set to a wall-clock moment, advancing 1 ms per command."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def set(self, moment: datetime) -> None:
        self.now = moment

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now.astimezone(UTC)


@dataclass
class Population:
    """Who is who in the synthetic population, so the demo can pick its examples."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    unattested_employees: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)


def synthetic_population(size: int, seed: int = 521) -> Population:
    """Mixed citizenships, dual nationals, green-card holders and employees without a
    nationality attestation, spread over several orgs and personal subscriptions."""
    rng = random.Random(seed)
    population = Population()
    add = population.commands.append
    birth = "1990-01-01T00:00:00+00:00"
    for model, family in MODELS.items():
        add({"type": "register_model", "model": model, "family": family})
    for org, selectors in ORGS.items():
        add({"type": "grant_entitlement", "entitlement": f"org-{org}", "grantee": {"org": org},
             "models": selectors, "valid_from": "2026-01-01T00:00:00+00:00"})
    for number in range(size):
        subject = f"u-{number:05d}"
        roll = rng.random()
        if roll < 0.55:
            kind, citizenships, residencies = "US citizen", ["US"], []
        elif roll < 0.60:
            kind, citizenships, residencies = "dual national", ["US", rng.choice(FOREIGN)], []
        elif roll < 0.65:
            kind, citizenships, residencies = "green-card holder", [rng.choice(FOREIGN)], ["US"]
        elif roll < 0.88:
            kind, citizenships, residencies = "foreign national", [rng.choice(FOREIGN)], []
        else:
            kind, citizenships, residencies = "nationality not attested", [], []
        population.kinds[kind] += 1
        employee = kind == "nationality not attested" or rng.random() < 0.6
        if employee:
            org = "interlock-ai" if kind == "nationality not attested" else rng.choice(list(ORGS))
            add({"type": "attest_employer", "subject": subject, "org": org,
                 "valid_from": "2025-06-01T00:00:00+00:00", "source": "hr-feed"})
        else:
            add({"type": "grant_entitlement", "entitlement": f"plan-{subject}",
                 "grantee": {"subject": subject}, "models": ["*"],
                 "valid_from": "2026-02-01T00:00:00+00:00"})
        if citizenships:
            add({"type": "attest_nationality", "subject": subject, "citizenships": citizenships,
                 "residencies": residencies, "valid_from": birth, "source": "passport-kyc",
                 "evidence": f"doc-{number}"})
        else:
            population.unattested_employees.append(subject)
        if rng.random() < 0.3:
            add({"type": "attest_location", "subject": subject, "country": rng.choice(
                ["US", "US", "US", *FOREIGN]), "valid_from": "2026-11-26T08:00:00-05:00",
                "source": "ip-geo"})
    return population


ORDER_COMMAND = {
    "type": "issue_directive", "directive": ORDER, "authority": "US Dept. of Commerce (BIS)",
    "reference": "letter of 2026-11-26", "received_at": "2026-11-26T17:21:00-05:00",
    "models": ["fable-5", "mythos-5"], "subjects": {"citizenship": {"none_of": ["US"]}},
    "effect": "deny", "disclose": True, "on_unknown": "apply",
}


def late_passports(population: Population) -> list[dict[str, Any]]:
    """The passports that arrive at 17:40 ET: half the employees whose nationality was
    unknown turn out to be US citizens since birth."""
    verified = population.unattested_employees[: len(population.unattested_employees) // 2]
    return [
        {"type": "attest_nationality", "subject": subject, "citizenships": ["US"],
         "residencies": [], "valid_from": "1990-01-01T00:00:00+00:00",
         "source": "passport-kyc", "evidence": f"late-doc-{subject}"}
        for subject in verified
    ]


def demo_commands(size: int) -> list[dict[str, Any]]:
    """Every command the demo applies, in order: the day's facts, the order, the passports
    (`interlock demo --export FILE`; recorded times are then those of `interlock apply`)."""
    population = synthetic_population(size)
    return [*population.commands, ORDER_COMMAND, *late_passports(population)]


def changes(engine: Engine, subjects: list[str], at: datetime, before: int, after: int) -> (
    Iterator[tuple[str, str, Any, Any]]
):
    """Every (subject, model) whose decision at `at` differs between two positions."""
    for subject in subjects:
        for model in MODELS:
            old = engine.index.decide(subject, model, at=at, as_of=before)
            new = engine.index.decide(subject, model, at=at, as_of=after)
            if old.effect != new.effect:
                yield subject, model, old, new


def loss_reason(decision: Any) -> str:
    codes = {reason.code for reason in decision.reasons}
    return "unknown nationality" if "unknown_attribute" in codes else "foreign national"


def run_demo(console: Console, store: str, subjects: int = 10_000, fresh: bool = True) -> None:
    if fresh and store.startswith("sqlite:///"):
        Path(store.removeprefix("sqlite:///")).unlink(missing_ok=True)
    clock = DemoClock(et(9, 0))
    engine = open_engine(store, clock=clock)
    try:
        _tell(console, engine, clock, subjects, store)
    finally:
        engine.close()


def _tell(console: Console, engine: Engine, clock: DemoClock, size: int, store: str) -> None:
    population = synthetic_population(size)
    subjects = [f"u-{n:05d}" for n in range(size)]
    console.rule("[bold]Interlock demo: the 5:21 p.m. order")
    with console.status("loading the day's facts"):
        loaded = engine.app.apply_all(parse_command(c) for c in population.commands)
        engine.catch_up()
    kinds = ", ".join(f"{n:,} {k}s" if not k.startswith("nat") else f"{n:,} with {k}"
                      for k, n in population.kinds.most_common())
    _entry(console, "[dim]09:00 ET[/]", f"{size:,} subjects on the store: {kinds}.")
    _entry(console, "", f"{loaded.applied:,} commands applied, store at position "
           f"{loaded.position:,} ({store}).")

    clock.set(et(17, 21))
    before = engine.app.position
    order = engine.app.apply(parse_command(ORDER_COMMAND))
    engine.catch_up()
    recorded = engine.index.facts.recorded_at(order.position)
    assert recorded is not None
    _entry(
        console, "[bold]17:21 ET[/]",
        f"order [bold]{ORDER}[/] (US Dept. of Commerce, BIS) received and "
        f"recorded at {recorded.astimezone(ET).isoformat(timespec='milliseconds')}, position "
        f"{order.position}: foreign nationals lose fable-5 and mythos-5, wherever they are, "
        "employees included."
    )

    moment = et(17, 21, 30)
    lost = list(changes(engine, subjects, moment, before, order.position))
    table = Table("model", "lost access", "foreign national", "unknown nationality",
                  title="Who lost access at 17:21 ET", title_justify="left")
    by_model = Counter(model for _, model, _, _ in lost)
    by_reason = Counter((model, loss_reason(new)) for _, model, _, new in lost)
    for model in MODELS:
        table.add_row(model, f"{by_model[model]:,}", f"{by_reason[model, 'foreign national']:,}",
                      f"{by_reason[model, 'unknown nationality']:,}")
    console.print(table)
    untouched = "opus-4.8"
    allowed = sum(engine.index.decide(s, untouched, at=moment).effect == "allow" for s in subjects)
    _entry(console, "", f"every other model is untouched: {untouched} still serves "
           f"{allowed:,} subjects, {by_model[untouched]} changes.")

    clock.set(et(17, 40))
    attestations = late_passports(population)
    verified = [attestation["subject"] for attestation in attestations]
    before_restore = engine.app.position
    restored_at = engine.app.apply_all(parse_command(c) for c in attestations)
    engine.catch_up()
    restored = list(changes(engine, verified, et(17, 40, 30), before_restore,
                            restored_at.position))
    _entry(
        console, "[bold]17:40 ET[/]",
        f"{len(attestations):,} passport attestations arrive for employees "
        f"whose nationality was unknown: {len({s for s, *_ in restored}):,} verified US persons "
        f"get back {len(restored):,} (subject, model) grants."
    )

    subject = verified[0]
    asked = et(17, 25)
    then = engine.index.decide(subject, "fable-5", at=asked, known_at=asked)
    now = engine.index.decide(subject, "fable-5", at=asked)
    _entry(console, "[bold]Officer[/]",
           f"\"Why was {subject} denied fable-5 at 17:25, and was that right?\"")
    _entry(console, "", f"as known at 17:25 (position {then.as_of:,}): "
           f"[red]{then.effect}[/], because {_because(then)}")
    _entry(console, "", f"as known now (position {now.as_of:,}): "
           f"[green]{now.effect}[/], because {_because(now)}: the passport recorded at "
           "17:40 shows a US citizen since birth.")
    console.print("[dim]Ask it yourself:[/]")
    # One line however narrow the terminal, so that it can be copied as it is.
    console.print(f"[dim]interlock decide {subject} fable-5 --at {asked.isoformat()} "
                  f"--known-at {asked.isoformat()} --store {store}[/]", soft_wrap=True)


def _entry(console: Console, when: str, text: str) -> None:
    """One line of the timeline: its time in a column of its own, the text wrapped beside it
    (never back under the time), at any width."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(width=8, no_wrap=True)
    grid.add_column()
    grid.add_row(when, text)
    console.print(grid)


def _because(decision: Any) -> str:
    return ", ".join(f"{r.code}={r.ref}" if r.ref else r.code for r in decision.reasons)
