"""Who gained or lost access between two valid times."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.decision import (
    Verdict,
)
from domain.facts import (
    FactBase,
    selector_matches,
)
from projections.compliance.candidates import moving_subjects
from projections.compliance.views import _access, _judge, iso, verdict_json
from projections.reach import Reach


@dataclass(frozen=True, slots=True)
class DiffRow:
    subject: str
    model: str
    before: Verdict
    after: Verdict

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "model": self.model,
                "before": verdict_json(self.before), "after": verdict_json(self.after)}


@dataclass(frozen=True)
class Diff:
    start: datetime
    end: datetime
    as_of: int
    models: list[str]
    compared: int
    subjects: int
    gained: list[DiffRow]
    lost: list[DiffRow]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": iso(self.start), "to": iso(self.end), "as_of": self.as_of,
            "models": self.models, "compared": {"subjects": self.compared,
                                                "of_subjects": self.subjects},
            "counts": {
                "gained": dict(sorted(Counter(r.model for r in self.gained).items())),
                "lost": dict(sorted(Counter(r.model for r in self.lost).items())),
            },
            "gained": [row.to_json() for row in self.gained],
            "lost": [row.to_json() for row in self.lost],
        }


def models_matching(facts: FactBase, selector: str | None) -> list[str]:
    """Registered models an exact id, `family:NAME` or `*` names (all when None)."""
    if selector is None:
        return sorted(facts.models)
    return sorted(name for name, m in facts.models.items()
                  if selector_matches(selector, name, m.family))


def diff(
    facts: FactBase,
    start: datetime,
    end: datetime,
    model: str | None = None,
    as_of: int | None = None,
    reach: Reach | None = None,
) -> Diff:
    """Who had access (an `allow`) at valid time `start` and not at `end`, or the reverse, as
    known at `as_of` (default: everything known), with the decisions at both times."""
    position = facts.position if as_of is None else min(as_of, facts.position)
    models = models_matching(facts, model)
    low, high = min(start, end), max(start, end)
    moving = moving_subjects(facts, reach, low, high, position, position)
    subjects = sorted(facts.subjects if moving is None else moving)
    gained, lost = [], []
    for subject in subjects:
        for name in models:
            before = _judge(facts, subject, name, start, position)
            after = _judge(facts, subject, name, end, position)
            access = _access(before, after)
            if access is not None:
                (gained if access == "gained" else lost).append(
                    DiffRow(subject, name, before, after))
    return Diff(start, end, position, models, len(subjects), len(facts.subjects), gained, lost)
