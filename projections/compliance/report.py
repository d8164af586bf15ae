"""The data of an order's report: timeline, access over time, impact and open unknowns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.facts import (
    DirectiveFacts,
    FactBase,
)
from projections.compliance.candidates import directive_candidates, moving_subjects
from projections.compliance.impact import Impact, impact
from projections.compliance.views import (
    INSTANT,
    View,
    _employers,
    _judge,
    directive_fact_events,
    iso,
)
from projections.reach import Reach


@dataclass(frozen=True)
class SeriesPoint:
    at: datetime
    decided: dict[str, int]
    """Subjects with access per model, as decided then (known at that moment)."""
    known_now: dict[str, int]
    """The same, as known now."""


@dataclass
class OrderReport:
    """What `interlock.report` renders: the order's timeline, access over time around it, its
    impact, and the unknowns still open."""

    impact: Impact
    now: datetime
    position: int
    subjects: int
    models: list[str]
    timeline: list[dict[str, Any]]
    series: list[SeriesPoint]
    unknowns: list[dict[str, Any]]
    restored: dict[str, int]
    """Of the pairs the order cut off, how many have access now (per model)."""
    chain_head: tuple[int, str] | None = None
    enforcement: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "directive": self.impact.directive.directive, "now": iso(self.now),
            "position": self.position, "subjects": self.subjects, "models": self.models,
            "timeline": self.timeline,
            "series": [{"at": iso(p.at), "decided": p.decided, "known_now": p.known_now}
                       for p in self.series],
            "impact": self.impact.to_json(), "unknowns": self.unknowns,
            "restored": self.restored,
            "chain_head": None if self.chain_head is None else {
                "position": self.chain_head[0], "link": self.chain_head[1]},
            "enforcement": self.enforcement,
        }


def access_series(
    facts: FactBase, reach: Reach | None, times: list[datetime], models: list[str]
) -> list[SeriesPoint]:
    """How many subjects had access to each model at each valid time, as decided then and as
    known now. Only subjects whose decision can move inside the window are judged at each
    time; the others are counted once."""
    if not times:
        return []
    low, high = min(times), max(times)
    first, last = facts.position_known_at(low), facts.position
    moving = moving_subjects(facts, reach, low, high, first, last)
    moving_list = sorted(facts.subjects if moving is None else moving)
    steady = Counter[str]()
    if moving is not None:
        for subject in facts.subjects:
            if subject not in moving:
                for model in models:
                    if _judge(facts, subject, model, low, first).effect == "allow":
                        steady[model] += 1
    points = []
    for at in times:
        counts = []
        for as_of in (min(facts.position_known_at(at), last), last):
            count = Counter(steady)
            for subject in moving_list:
                for model in models:
                    if _judge(facts, subject, model, at, as_of).effect == "allow":
                        count[model] += 1
            counts.append({model: count[model] for model in models})
        points.append(SeriesPoint(at, counts[0], counts[1]))
    return points


def open_unknowns(
    facts: FactBase, reach: Reach | None, directive: str, now: datetime
) -> list[dict[str, Any]]:
    """Subjects the directive denies now only because an attribute is unknown."""
    position = facts.position
    if reach is None:
        subjects: Iterable[str] = facts.subjects
        models: Iterable[str] = sorted(facts.models)
    else:
        subjects, models = directive_candidates(facts, reach, directive, position, now)
    open_: dict[str, dict[str, Any]] = {}
    cited = ("directive", directive)
    for subject in sorted(subjects):
        for model in models:
            verdict = _judge(facts, subject, model, now, position)
            if verdict.effect != "deny" or cited not in verdict.reasons:
                continue
            unknown = [r.ref for r in verdict.reasons if r.code == "unknown_attribute"]
            if not unknown:
                continue
            entry = open_.setdefault(subject, {
                "subject": subject, "models": [], "unknown_attributes": set(),
                "employer": _employers(facts.subjects.get(subject)),
            })
            entry["models"].append(model)
            entry["unknown_attributes"].update(unknown)
    return [{**e, "unknown_attributes": sorted(e["unknown_attributes"])}
            for e in open_.values()]


def order_report(
    view: View,
    directive: str,
    now: datetime | None = None,
    before: timedelta = timedelta(minutes=30),
    after: timedelta = timedelta(minutes=60),
    points: int = 31,
    enforcement: list[dict[str, Any]] | None = None,
    chain_head: tuple[int, str] | None = None,
) -> OrderReport:
    """The data of an order's report (raises KeyError for an unknown directive). Its figures
    "now" are decisions at valid time `now` (default: the moment the report is made) with
    everything known."""
    facts, reach = view.facts, view.reach
    moment = now or datetime.now(UTC)
    result = impact(facts, directive, reach)
    d = result.directive
    models = sorted(facts.models)
    recorded = d.recorded_at
    start = min(d.received_at, d.effective_at) - before
    end = max(recorded, d.effective_at) + after
    times = {start + (end - start) * i / (points - 1) for i in range(points)}
    for key in (d.effective_at, recorded):
        times |= {key - INSTANT, key}
    for burst in _bursts(facts, start, end, gap=(end - start) / points):
        times |= {burst - INSTANT, burst}
    series = access_series(facts, reach, sorted(t for t in times if start <= t <= end), models)
    restored = Counter(row.model for row in result.rows
                       if _judge(facts, row.subject, row.model, moment,
                                 facts.position).effect == "allow")
    report = OrderReport(
        result, moment, facts.position, len(facts.subjects), models,
        _timeline(facts, d, result, enforcement), series,
        open_unknowns(facts, reach, directive, moment),
        {model: restored[model] for model in models}, chain_head,
    )
    if enforcement is not None:
        report.enforcement = _enforcement_summary(d, enforcement)
    return report


def _bursts(facts: FactBase, start: datetime, end: datetime, gap: timedelta,
            limit: int = 200_000) -> list[datetime]:
    """The first and last recorded time of each burst of events inside the window, so that a
    chart sampled at a few times still shows when recorded facts changed decisions."""
    first, last = facts.position_known_at(start), facts.position_known_at(end)
    if last - first > limit:
        return []
    moments: list[datetime] = []
    previous: datetime | None = None
    for position in range(first + 1, last + 1):
        recorded = facts.recorded_at(position)
        if recorded is None or recorded == previous:
            continue
        if previous is None or recorded - previous > gap:
            if previous is not None:
                moments.append(previous)
            moments.append(recorded)
        previous = recorded
    if previous is not None:
        moments.append(previous)
    return moments


_ORDER = {"received": 0, "effective": 1, "recorded": 2, "enforced": 3}


def _timeline(
    facts: FactBase, d: DirectiveFacts, result: Impact, enforcement: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    switched = max(d.recorded_at, d.effective_at)
    rows: list[dict[str, Any]] = [
        {"at": iso(d.received_at), "what": "received",
         "detail": f"from {d.authority or 'the authority'}"
                   + (f" ({d.reference})" if d.reference else "")},
        {"at": iso(d.recorded_at), "what": "recorded",
         "detail": f"stored at position {d.position:,}"},
        {"at": iso(d.effective_at), "what": "effective",
         "detail": "the order's valid time starts"},
    ]
    summary = _enforcement_summary(d, enforcement) if enforcement is not None else None
    if summary and summary["records"]:
        rows.append({"at": summary["first_emitted_at"], "what": "enforced",
                     "detail": f"first of {summary['records']} access_revoked records emitted "
                               "by the enforcer",
                     "times": {"last": summary["last_emitted_at"]}})
    else:
        rows.append({"at": iso(switched), "what": "enforced",
                     "detail": f"decisions switched for {len(result.rows):,} (subject, model) "
                               "pairs when the index applied the order (the later of recorded "
                               "and effective); no enforcement log was given"})
    for event in directive_fact_events(facts, d)[1:]:
        rows.append({"at": iso(event.recorded_at), "what": event.event.removeprefix("directive_"),
                     "detail": f"position {event.position:,}",
                     "times": {"effective": event.detail.get("effective_at")}})
    return sorted(rows, key=lambda r: (r["at"] or "", _ORDER.get(r["what"], 9)))


def _enforcement_summary(d: DirectiveFacts, records: list[dict[str, Any]] | None) -> dict[
    str, Any
]:
    mine = [r for r in records or () if r.get("position") == d.position]
    emitted = sorted(str(r["emitted_at"]) for r in mine if r.get("emitted_at"))
    return {"records": len(mine), "first_emitted_at": emitted[0] if emitted else None,
            "last_emitted_at": emitted[-1] if emitted else None}


def load_enforcement_log(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The embedded enforcer's JSON-lines file (`revocation_file`)."""
    import json

    return [json.loads(line) for line in lines if line.strip()]
