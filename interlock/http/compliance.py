"""The auditor's queries over HTTP: a subject's history, a directive's impact, and who gained
or lost access between two valid times. Impact and diff are `projections.compliance`'s, the
same as `interlock impact` and `interlock diff`, shaped into the API's typed bodies; they hold
the index still (`AccessIndex.reading`) while they run, and use the embedded enforcer's reach
indexes when there is one to look only at the subjects that can have changed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from domain.decision import Decision
from interlock.http.models import (
    ChangeOut,
    DiffOut,
    HistoryOut,
    ImpactOut,
)
from projections import compliance
from projections.access_index import AccessIndex
from projections.reach import Reach


def history(
    index: AccessIndex, subject: str, model: str | None, current: Callable[[str, str], Decision]
) -> HistoryOut | None:
    """Everything known about `subject` (`projections.compliance.subject_record`) and its
    current decisions; None when nothing is."""
    with index.reading() as facts:
        record = compliance.subject_record(facts, subject)
        if record is None:
            return None
        position = facts.position
        models = sorted(facts.models) if model is None else [model]
    return HistoryOut.model_validate({
        "subject": subject, "as_of": position, "attestations": record.attestations,
        "revocations": record.revocations, "entitlements": record.entitlements,
        "decisions": [current(subject, name).to_json() for name in models],
    })


def impact(index: AccessIndex, directive: str, reach: Reach | None = None) -> ImpactOut | None:
    """`interlock impact` over HTTP (projections.compliance.impact); None for an unknown
    directive."""
    with index.reading():
        if directive not in index.facts.directives:
            return None
        found = compliance.impact(index.facts, directive, reach)
    return ImpactOut(
        directive=directive, position=found.after, effective_at=found.at,
        models=list(found.models), subjects=found.compared,
        changes=[_change_of(row, found.at, found.before, found.at, found.after)
                 for row in found.rows],
    )


def diff(index: AccessIndex, start: datetime, end: datetime, model: str | None,
         reach: Reach | None = None) -> DiffOut:
    """`interlock diff` over HTTP (projections.compliance.diff), as known now."""
    with index.reading():
        found = compliance.diff(index.facts, start, end, model, reach=reach)
    position = found.as_of
    return DiffOut(
        from_=start, to=end, as_of=position, models=found.models,
        gained=[_change_of(row, start, position, end, position) for row in found.gained],
        lost=[_change_of(row, start, position, end, position) for row in found.lost],
    )


def _change_of(row: Any, at_before: datetime, before: int, at_after: datetime, after: int
               ) -> ChangeOut:
    return ChangeOut(
        subject=row.subject, model=row.model,
        before=Decision.of(row.subject, row.model, row.before, at_before, before).to_json(),
        after=Decision.of(row.subject, row.model, row.after, at_after, after).to_json(),
    )
