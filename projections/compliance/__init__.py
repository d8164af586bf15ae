"""Compliance officer queries: history, impact (and what-if), diff and explain.

Every answer is computed by `domain.decision.judge` over the same fact base the access index
decides from; nothing here re-implements the rule. What this module adds is *which* decisions
to compare and how to say why they differ:

- **history** follows the decisions as they were actually made (see `history`);
- **impact** compares decisions at a directive's effective time as known just before and just
  after the position that issued it;
- **diff** compares decisions at two valid times as known at one position;
- **explain** lays out the facts one decision used, evaluating each predicate node by node with
  the very attribute lookup `judge` uses.

Candidate subjects come from `projections.reach.Reach` (entitled subjects per model, settled
attribute values per subject) when one is given, so a query looks at the subjects a change can
reach instead of everyone; without one it looks at everyone, which is slower and gives the same
answer. Reach knows the *current* facts, so its "surely not" is only trusted for a subject
whose settling attestation was already known and valid at the moment asked about (see
`directive_candidates`).
"""

from projections.compliance.candidates import (
    directive_candidates,
    issued_event,
    moving_subjects,
    predicate_attributes,
)
from projections.compliance.diff import Diff, DiffRow, diff, models_matching
from projections.compliance.explain import explain, explain_attributes, explain_predicate
from projections.compliance.history import Change, History, decision_changes, history
from projections.compliance.impact import Impact, ImpactRow, impact, what_if
from projections.compliance.report import (
    OrderReport,
    SeriesPoint,
    access_series,
    load_enforcement_log,
    open_unknowns,
    order_report,
)
from projections.compliance.views import (
    INSTANT,
    FactEvent,
    View,
    attestation_json,
    directive_fact_events,
    entitlement_json,
    iso,
    load_view,
    subject_entitlements,
    subject_fact_events,
    verdict_json,
)

__all__ = [
    "INSTANT",
    "Change",
    "Diff",
    "DiffRow",
    "FactEvent",
    "History",
    "Impact",
    "ImpactRow",
    "OrderReport",
    "SeriesPoint",
    "View",
    "access_series",
    "attestation_json",
    "decision_changes",
    "diff",
    "directive_candidates",
    "directive_fact_events",
    "entitlement_json",
    "explain",
    "explain_attributes",
    "explain_predicate",
    "history",
    "impact",
    "iso",
    "issued_event",
    "load_enforcement_log",
    "load_view",
    "models_matching",
    "moving_subjects",
    "open_unknowns",
    "order_report",
    "predicate_attributes",
    "subject_entitlements",
    "subject_fact_events",
    "verdict_json",
    "what_if",
]
