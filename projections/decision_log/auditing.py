"""Checking a decision log: its hash chains, each served decision re-decided by the rule, and
what an order's exposure window let through."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.decision import Decision, Reason, Verdict, judge, utc_iso
from domain.facts import FactBase
from projections.chain import GENESIS
from projections.decision_log.entry import (
    Entry,
    Genesis,
    Served,
    digest_of,
    genesis_of,
    link_of,
)
from projections.decision_log.stores import LogQuery, LogReader


@dataclass(frozen=True)
class ChainProblem:
    chain: str
    seq: int
    problem: str
    """`edited` (content differs from its digest), `resealed` (the entry was edited and sealed
    anew: the next one no longer follows), `removed` (sequence numbers missing) or
    `duplicated`."""
    entry_id: str | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"chain": self.chain, "seq": self.seq, "problem": self.problem,
                "decision_id": self.entry_id, "detail": self.detail}


def verify_chain(chain: str, entries: Iterable[Entry], start: Genesis | Entry | None,
                 problems: list[ChainProblem]) -> tuple[int, bytes] | None:
    """Checks one chain's entries (in sequence order) from `start` — its genesis, or the
    stored entry before the first one checked — appending what is wrong to `problems`; returns
    the chain's head (seq, link) reached."""
    seq, link = (0, GENESIS) if start is None else (start.seq, start.link)
    previous: Entry | None = start if isinstance(start, Entry) else None
    head = None
    for entry in entries:
        if entry.seq <= seq:
            if previous is not None and entry.seq == previous.seq:
                problems.append(ChainProblem(chain, entry.seq, "duplicated", entry.entry_id,
                                             "a second entry holds this sequence number"))
            continue
        gap = entry.seq > seq + 1
        if gap:
            missing = (f"seq {seq + 1}" if entry.seq == seq + 2
                       else f"seqs {seq + 1}-{entry.seq - 1}")
            problems.append(ChainProblem(chain, seq + 1, "removed", None,
                                         f"{missing} missing before decision {entry.entry_id}"))
        if digest_of(entry.canonical()) != entry.digest:
            problems.append(ChainProblem(chain, entry.seq, "edited", entry.entry_id,
                                         "the entry's content differs from what was sealed"))
        elif not gap and link_of(link, entry.seq, entry.entry_id, entry.digest) != entry.link:
            culprit = previous.entry_id if previous is not None else None
            problems.append(ChainProblem(
                chain, seq, "resealed", culprit,
                f"decision {entry.entry_id} does not follow from the entry before it: that one "
                "was edited and sealed anew, or replaced"))
        seq, link, previous = entry.seq, entry.link, entry
        head = (seq, link)
    return head


@dataclass(frozen=True)
class Difference:
    """A logged decision the rule does not give at its as_of, valid time and context."""

    entry: Entry
    rule: Verdict | None
    """None when the store has no position `as_of` (it lacks the facts the answer claims)."""
    detail: str

    def to_json(self) -> dict[str, Any]:
        served = self.entry.served
        assert served is not None
        d = served.decision
        rule = None if self.rule is None else Decision.of(
            d.subject, d.model, self.rule, d.at, d.as_of).to_json()
        return {"decision_id": self.entry.entry_id, "served_at": utc_iso(self.entry.served_at),
                "replica": self.entry.replica, "served": d.to_json(), "rule": rule,
                "detail": self.detail}


@dataclass
class LogAudit:
    position: int
    """The store position the rule was applied with (decisions as_of beyond it differ)."""
    decisions: int = 0
    agreed: int = 0
    failed_closed: int = 0
    """`stale_index` denials: the replica lagged and denied rather than answer from old facts
    (what the rule says at that as_of is not what such an answer claims, so they are counted,
    not compared)."""
    differences: list[Difference] = field(default_factory=list)
    problems: list[ChainProblem] = field(default_factory=list)
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    prunes: list[Entry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "position": self.position, "decisions": self.decisions,
            "agreed": self.agreed, "failed_closed": self.failed_closed,
            "differences": [d.to_json() for d in self.differences],
            "chain_problems": [p.to_json() for p in self.problems],
            "chains": {name: {"seq": seq, "link": link.hex()}
                       for name, (seq, link) in sorted(self.heads.items())},
            "prunes": [{"decision_id": p.entry_id, "pruned_at": utc_iso(p.served_at),
                        "replica": p.replica, **(p.pruned.to_json() if p.pruned else {})}
                       for p in self.prunes],
        }


STALE_INDEX = (Reason("stale_index"),)


def redecide(facts: FactBase, served: Served) -> Verdict | None:
    """What the rule answers for a logged request at its as_of; None beyond the store."""
    d = served.decision
    if d.as_of > facts.position:
        return None
    return judge(facts, d.subject, d.model, d.at, d.as_of, served.context)


def audit(log: LogReader, facts: FactBase, start: datetime | None = None,
          end: datetime | None = None) -> LogAudit:
    """Verifies the chains of the decisions served in [start, end) (every chain, whole, when
    no window is given) and re-decides each of them from `facts`."""
    log = log.snapshot()
    report = LogAudit(facts.position, prunes=log.prunes())
    genesis = genesis_of(report.prunes)
    for record in report.prunes:
        head = verify_chain(record.chain, [record], None, report.problems)
        if head is not None:
            report.heads[record.chain] = head
    for chain, (low, high) in sorted(log.chain_ranges(start, end).items()):
        anchor: Genesis | Entry | None = genesis.get(chain)
        floor = 0 if anchor is None else anchor.seq
        if start is not None and low - 1 > floor:
            # a window: the chain is checked from the stored entry before it, if any
            before = log.entry_before(chain, low)
            if before is not None and before.seq > floor:
                anchor = before
        entries = log.chain_entries(chain, low, high)
        head = verify_chain(chain, _redeciding(report, facts, entries), anchor, report.problems)
        if head is not None:
            report.heads[chain] = head
    return report


def _redeciding(report: LogAudit, facts: FactBase, entries: Iterable[Entry]
                ) -> Iterator[Entry]:
    for entry in entries:
        served = entry.served
        if served is not None:
            report.decisions += 1
            _compare(report, facts, entry, served)
        yield entry


def _compare(report: LogAudit, facts: FactBase, entry: Entry, served: Served) -> None:
    d = served.decision
    if d.effect == "deny" and d.reasons == STALE_INDEX:
        report.failed_closed += 1
        return
    rule = redecide(facts, served)
    if rule is None:
        report.differences.append(Difference(
            entry, None, f"served as of position {d.as_of}, beyond the store's last position "
            f"{facts.position}: the facts it claims are not in this store"))
    elif rule != d.verdict:
        report.differences.append(Difference(
            entry, rule, f"the rule at position {d.as_of} answers {rule.effect}, "
            f"{d.effect} was served"))
    else:
        report.agreed += 1



@dataclass(frozen=True)
class Exposure:
    """Allows served for (subject, model) pairs an order cut off, at valid times it was in
    force, by replicas that had not applied it yet (`as_of` before its position): what the
    order's exposure window really let through."""

    allows: int
    subjects: int
    by_model: dict[str, int]
    first: datetime | None
    last: datetime | None
    after_enforcement: int
    """Allows for those pairs as of the order's position or later: access given back by facts
    recorded since (a passport, a licence), which `decisions audit` re-proves."""
    served: int
    """Decisions for those pairs served at valid times the order was in force."""

    def to_json(self) -> dict[str, Any]:
        return {"allows": self.allows, "subjects": self.subjects, "by_model": self.by_model,
                "first": utc_iso(self.first), "last": utc_iso(self.last),
                "after_enforcement": self.after_enforcement, "served": self.served}


def exposure(log: LogReader, pairs: set[tuple[str, str]], effective_at: datetime,
             position: int) -> Exposure:
    """The order's exposure from the log: `pairs` are the (subject, model) decisions it changed,
    `position` where it was stored."""
    allows = Counter[str]()
    subjects: set[str] = set()
    first = last = None
    after = served = 0
    for entry in log.select(LogQuery.model_validate({"from": effective_at})):
        assert entry.served is not None
        d = entry.served.decision
        if (d.subject, d.model) not in pairs or d.at < effective_at:
            continue
        served += 1
        if d.effect != "allow":
            continue
        if d.as_of >= position:
            after += 1
            continue
        allows[d.model] += 1
        subjects.add(d.subject)
        moment = entry.served_at
        first = moment if first is None or moment < first else first
        last = moment if last is None or moment > last else last
    return Exposure(sum(allows.values()), len(subjects), dict(sorted(allows.items())), first,
                    last, after, served)
